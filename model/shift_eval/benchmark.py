"""Interest-shift benchmarks on real histories: where the change points are known.

* **Spliced**: the first events of a user A joined to the last events of a user B whose
  dominant categories differ (A's most frequent category is not among B's three most
  frequent, and the other way round). The change point is the first event of B. B's
  timestamps are moved to follow A's, keeping B's own gaps (the gap across the seam is the
  one B had before its suffix), so nothing but the events themselves marks the seam.
  **Controls** are unspliced real windows of the same lengths with no change point.
* **Natural**: real, whole histories labelled by :func:`natural_changes`, a documented
  offline rule that looks at the past and the future (which a detector never sees).

Users are split into validation and test by a hash of their id, so thresholds tuned on one
split are scored on users they have never seen.

>>> from model.data.loaders import UserSequence
>>> user = UserSequence("u", ("i",) * 40, ("a",) * 20 + ("b",) * 20, ("view",) * 40, tuple(range(40)))
>>> natural_changes(user.categories, window=10, threshold=0.6)
(20,)
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.data.events import StoredEvent
from model.data.loaders import EventLog, UserSequence
from model.online.distribution import frequencies, jensen_shannon

Split = Literal["validation", "test"]
NATURAL_WINDOW = 20
NATURAL_THRESHOLD = 0.8


@dataclass(frozen=True)
class Track:
    """A benchmark sequence: one (possibly spliced) history and its known change points."""

    name: str
    kind: Literal["spliced", "control", "natural"]
    sequence: UserSequence
    changes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.sequence)

    def events(self) -> list[StoredEvent]:
        """The history as stream events (ids unique within the track, ts in milliseconds)."""
        s = self.sequence
        timestamps = s.timestamps or tuple(range(len(s)))
        return [
            StoredEvent(f"{self.name}#{i}", s.items[i], s.categories[i], s.behaviors[i], 1000 * timestamps[i])
            for i in range(len(s))
        ]


def user_split(user_id: str) -> Split:
    """A stable validation/test assignment by CRC-32 of the user id."""
    return "validation" if zlib.crc32(user_id.encode()) % 2 == 0 else "test"


def users_of(log: EventLog, split: Split, min_length: int) -> list[UserSequence]:
    return [u for u in log.users if user_split(u.user_id) == split and len(u) >= min_length]


def dominant(categories: Sequence[str], n: int) -> list[str]:
    """The ``n`` most frequent categories, ties broken by id."""
    counts = Counter(categories)
    return sorted(counts, key=lambda c: (-counts[c], c))[:n]


def _slice(user: UserSequence, start: int, stop: int) -> UserSequence:
    return UserSequence(
        user.user_id,
        user.items[start:stop],
        user.categories[start:stop],
        user.behaviors[start:stop],
        None if user.timestamps is None else user.timestamps[start:stop],
    )


def splice(a: UserSequence, prefix: int, b: UserSequence, suffix: int) -> UserSequence:
    """A's first ``prefix`` events then B's last ``suffix``, B's times moved to follow A's."""
    head, tail = _slice(a, 0, prefix), _slice(b, len(b) - suffix, len(b))
    timestamps = None
    if head.timestamps is not None and tail.timestamps is not None and b.timestamps is not None:
        start = len(b) - suffix
        seam = b.timestamps[start] - b.timestamps[start - 1] if start > 0 else 60
        shift = head.timestamps[-1] + seam - tail.timestamps[0]
        timestamps = head.timestamps + tuple(t + shift for t in tail.timestamps)
    return UserSequence(
        f"{a.user_id}+{b.user_id}",
        head.items + tail.items,
        head.categories + tail.categories,
        head.behaviors + tail.behaviors,
        timestamps,
    )


def spliced_tracks(
    users: Sequence[UserSequence], n: int, seed: int, min_part: int = 20, max_part: int = 60, max_tries: int = 100_000
) -> list[Track]:
    """Up to ``n`` spliced histories of users drawn from ``users``; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    eligible = [u for u in users if len(u) >= min_part]
    tracks: list[Track] = []
    seen: set[tuple[str, str]] = set()
    for _ in range(max_tries):
        if len(tracks) == n or len(eligible) < 2:
            break
        i, j = rng.choice(len(eligible), size=2, replace=False)
        a, b = eligible[i], eligible[j]
        prefix = int(rng.integers(min_part, min(len(a), max_part) + 1))
        suffix = int(rng.integers(min_part, min(len(b), max_part) + 1))
        head, tail = a.categories[:prefix], b.categories[len(b) - suffix :]
        if (
            (a.user_id, b.user_id) in seen
            or dominant(head, 1)[0] in dominant(tail, 3)
            or dominant(tail, 1)[0] in dominant(head, 3)
        ):
            continue
        seen.add((a.user_id, b.user_id))
        tracks.append(Track(f"splice:{a.user_id}+{b.user_id}", "spliced", splice(a, prefix, b, suffix), (prefix,)))
    return tracks


def control_tracks(
    users: Sequence[UserSequence], n: int, seed: int, min_part: int = 20, max_part: int = 60
) -> list[Track]:
    """Up to ``n`` unspliced windows (one per user) as long as spliced histories tend to be."""
    rng = np.random.default_rng(seed)
    eligible = [u for u in users if len(u) >= 2 * min_part]
    order = rng.permutation(len(eligible))[:n]
    tracks = []
    for index in order:
        user = eligible[index]
        length = int(rng.integers(2 * min_part, min(len(user), 2 * max_part) + 1))
        start = int(rng.integers(0, len(user) - length + 1))
        tracks.append(Track(f"control:{user.user_id}", "control", _slice(user, start, start + length), ()))
    return tracks


def natural_changes(
    categories: Sequence[str], window: int = NATURAL_WINDOW, threshold: float = NATURAL_THRESHOLD
) -> tuple[int, ...]:
    """Change points of a real history by looking ahead: the offline labeller.

    Position ``t`` is a candidate when the category frequencies of the ``window`` events
    before it differ from both the next ``window`` events and the ``window`` after those
    (the change persists) by a Jensen-Shannon divergence of at least ``threshold``:
    ``score(t) = min(JSD(past, next), JSD(past, later)) >= threshold``. Each run of
    consecutive candidates is one change, at its highest score (the earliest on ties).
    """
    n = len(categories)
    scores = np.zeros(n)
    for t in range(window, n - 2 * window + 1):
        past = frequencies(list(categories[t - window : t]), m=window)
        following = frequencies(list(categories[t : t + window]), m=window)
        later = frequencies(list(categories[t + window : t + 2 * window]), m=window)
        scores[t] = min(jensen_shannon(past, following), jensen_shannon(past, later))
    changes = []
    t = 0
    while t < n:
        if scores[t] >= threshold:
            run_end = t
            while run_end + 1 < n and scores[run_end + 1] >= threshold:
                run_end += 1
            changes.append(t + int(np.argmax(scores[t : run_end + 1])))
            t = run_end + 1
        else:
            t += 1
    return tuple(changes)


def natural_tracks(
    users: Sequence[UserSequence], window: int = NATURAL_WINDOW, threshold: float = NATURAL_THRESHOLD
) -> list[Track]:
    """Every history long enough to hold a labelled change, with its labels (possibly none)."""
    return [
        Track(f"natural:{u.user_id}", "natural", u, natural_changes(u.categories, window, threshold))
        for u in users
        if len(u) >= 3 * window
    ]
