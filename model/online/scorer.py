"""From users' event windows to interest: what the worker publishes and what its detector reads.

Two readings of the same model, both by raw category id (:mod:`model.online.distribution`):

* the **interest** after a user's newest event, over their whole history: one cached step
  of :class:`~model.online.engine.IncrementalEngine` per event;
* the **recent interest**, the shift detector's input: the model run over the user's last
  ``recent_events`` events alone (the first with no known gap before it). The full-history
  interest keeps mass on old categories for many events after a user turns away (real users
  come back to them), so a detector fed that sees moves late; compared with the detector's
  own slow profile, the recent reading shows the move when it happens. It costs one forward
  over a short window per event, batched.

:class:`InterestScorer` computes both for a batch of :class:`UserWindow`; ``shiftwatch
detect-eval`` and the worker's timeline view compute them offline with
:func:`recent_interest_along` and :func:`interest_along`, the same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from model.data.events import StoredEvent
from model.data.loaders import UserSequence
from model.data.vocab import OOV_ID, Tokenizer, TokenSequence, Vocabulary
from model.net.checkpoint import Checkpoint
from model.net.predict import Scored, score_outputs
from model.net.transformer import InterestTransformer
from model.online.distribution import Distribution, copied_outside_vocabulary, from_model
from model.online.engine import EventTokens, IncrementalEngine, UserEvent


@dataclass(frozen=True, slots=True)
class UserWindow:
    """A user's kept events as they stood just after their newest, ``events[-1]``.

    ``first_position`` is the absolute position of ``events[0]`` in the user's stream;
    ``before_ts`` the time of the event before it (``None``: none was ever dropped).
    """

    user_id: str
    events: tuple[StoredEvent, ...]
    first_position: int
    before_ts: int | None

    @property
    def index(self) -> int:
        return len(self.events) - 1

    @property
    def position(self) -> int:
        return self.first_position + self.index

    @property
    def event(self) -> StoredEvent:
        return self.events[-1]


def event_tokens(
    tokenizer: Tokenizer, window: UserWindow, i: int, opens_window: bool = False
) -> tuple[int, int, int, int]:
    """Model ids of ``window.events[i]``, its time gap taken from the event before (none for
    the first event of a window that ``opens_window``)."""
    event = window.events[i]
    previous = None if opens_window else window.events[i - 1].ts if i > 0 else window.before_ts
    gap = None if previous is None else (event.ts - previous) // 1000
    return tokenizer.encode_event(event.item_id, event.category_id, event.event_type, gap)


def window_tokens(
    tokenizer: Tokenizer, window: UserWindow, start: int, stop: int, opens_window: bool = False
) -> TokenSequence:
    """Model ids of ``window.events[start:stop]``."""
    rows = [event_tokens(tokenizer, window, i, opens_window and i == start) for i in range(start, stop)]
    columns = np.asarray(rows, dtype=np.int64).reshape(-1, 4).T
    return TokenSequence(*(np.ascontiguousarray(c) for c in columns))


class WindowHistory:
    """The engine's :class:`~model.online.engine.HistorySource` for one batch: each user's
    events before the one being scored, read from that event's window."""

    def __init__(self, tokenizer: Tokenizer, windows: Sequence[UserWindow]):
        self.tokenizer = tokenizer
        self.windows = {(w.user_id, w.position): w for w in windows}

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        window = self.windows[(user, position)]
        return window_tokens(self.tokenizer, window, max(0, window.index - count), window.index)


@dataclass(frozen=True, slots=True)
class BatchInterest:
    """A batch's readings, row by row: the model's distribution over its category vocabulary
    (``probs``, float64) and its entropy in nats, the interest by raw category (``top_k``
    kept), and the recent interest (``top_m`` kept)."""

    model_version: str
    probs: np.ndarray
    entropy: np.ndarray
    interest: list[Distribution]
    recent: list[Distribution]


class InterestScorer:
    """Both readings for a batch of windows, the full-history one through a cached engine.

    ``score`` takes windows of which only the first may follow a change to its user's past
    (a reordered event); :meth:`forget` that user first.
    """

    def __init__(self, checkpoint: Checkpoint, *, budget_bytes: int, top_k: int, recent_events: int, top_m: int):
        self.engine = IncrementalEngine(checkpoint.model, checkpoint.model_version, budget_bytes=budget_bytes, top_k=0)
        self.tokenizer = checkpoint.tokenizer
        self.top_k = top_k
        self.recent_events = recent_events
        self.top_m = top_m

    def swap(self, checkpoint: Checkpoint, recent_events: int, top_m: int) -> None:
        """Score with another checkpoint (and detector input size) from the next batch on;
        every user's cache is rebuilt on their next event."""
        self.engine.swap(checkpoint.model, checkpoint.model_version)
        self.tokenizer = checkpoint.tokenizer
        self.recent_events = recent_events
        self.top_m = top_m

    def forget(self, user_id: str) -> None:
        self.engine.forget(user_id)

    def score(self, windows: Sequence[UserWindow]) -> BatchInterest:
        tokenizer = self.tokenizer
        steps = [UserEvent(w.user_id, w.position, EventTokens(*event_tokens(tokenizer, w, w.index))) for w in windows]
        result = self.engine.step(steps, WindowHistory(tokenizer, windows))
        probs = result.category_probs.astype(np.float64)
        entropy = -torch.special.xlogy(torch.from_numpy(probs), torch.from_numpy(probs)).sum(dim=1).numpy()
        k = min(self.top_k, probs.shape[1] - OOV_ID - 1)
        # padding and the model's own OOV mass are not categories
        best = torch.from_numpy(result.category_probs[:, OOV_ID + 1 :]).topk(k, dim=1).indices.numpy() + OOV_ID + 1
        interest = []
        for row, window in enumerate(windows):
            weights, positions = result.copy_weights[row], result.copy_positions[row]
            slots = np.flatnonzero((positions >= 0) & (weights > 0))
            copied_categories = [window.events[positions[s] - window.first_position].category_id for s in slots]
            copied = copied_outside_vocabulary(weights[slots], copied_categories, tokenizer.categories)
            interest.append(from_model(probs[row], best[row], tokenizer.categories, copied, self.top_k))
        return BatchInterest(result.model_version, probs, entropy, interest, self.recent(windows))

    def recent(self, windows: Sequence[UserWindow]) -> list[Distribution]:
        """Each window's recent interest: the model over its last ``recent_events`` events alone."""
        recent_windows, categories = [], []
        for w in windows:
            first = max(0, w.index + 1 - self.recent_events)
            recent_windows.append(window_tokens(self.tokenizer, w, first, w.index + 1, opens_window=True))
            categories.append([e.category_id for e in w.events[first : w.index + 1]])
        return recent_interest(self.engine.model, self.tokenizer, recent_windows, categories, self.top_m)


def copied_mass(scored: Scored, row: int, raw_categories: Sequence[str], vocabulary: Vocabulary) -> dict[str, float]:
    """The copy mass of output ``row`` of ``scored`` on events (of the sequence whose raw
    categories are ``raw_categories``) whose category is outside ``vocabulary``; empty for
    the item head, which does not copy."""
    if scored.copy_weights is None or scored.window_starts is None:
        return {}
    start = int(scored.window_starts[row])
    visible = int(scored.outputs[row]) - start + 1  # the window up to and including the output itself
    weights = scored.copy_weights[row, :visible]
    return copied_outside_vocabulary(weights, raw_categories[start : start + len(weights)], vocabulary)


def scored_interest(
    scored: Scored, raw_categories: Sequence[Sequence[str]], vocabulary: Vocabulary, m: int
) -> Iterator[tuple[int, int, Distribution]]:
    """``(sequence, output position, interest)`` for each category output of ``scored``,
    by raw category id, ``m`` categories kept."""
    k = min(m, scored.scores.shape[1] - 1)
    best = np.argpartition(-scored.scores, k, axis=1)[:, :k]
    for row, (s, position) in enumerate(zip(scored.sequences, scored.outputs)):
        copied = copied_mass(scored, row, raw_categories[s], vocabulary)
        yield s, position, from_model(scored.scores[row].astype(np.float64), best[row], vocabulary, copied, m)


def recent_interest(
    model: InterestTransformer,
    tokenizer: Tokenizer,
    windows: Sequence[TokenSequence],
    raw_categories: Sequence[Sequence[str]],
    m: int,
) -> list[Distribution]:
    """The interest after the last event of each window (tokens, and their raw categories),
    reading that window only; ``m`` categories kept."""
    out: list[Distribution] = [{} for _ in windows]
    wanted = [np.array([len(w) - 1]) for w in windows]
    for scored in score_outputs(model, windows, wanted, "category", batch_size=256):
        for s, _, interest in scored_interest(scored, raw_categories, tokenizer.categories, m):
            out[s] = interest
    return out


def interest_along(
    checkpoint: Checkpoint, sequences: Sequence[UserSequence], m: int, progress: bool = True
) -> list[list[Distribution]]:
    """The full-history interest after every event of every sequence, as the worker publishes it."""
    tokenizer = checkpoint.tokenizer
    tokens = [tokenizer.encode(s) for s in sequences]
    out: list[list[Distribution]] = [[{} for _ in range(len(s))] for s in sequences]
    wanted = [np.arange(len(s)) for s in sequences]
    with tqdm(
        total=sum(len(s) for s in sequences), desc="interest", unit="event", leave=False, disable=not progress
    ) as bar:
        for scored in score_outputs(checkpoint.model, tokens, wanted, "category"):
            for s, position, interest in scored_interest(
                scored, [q.categories for q in sequences], tokenizer.categories, m
            ):
                out[s][position] = interest
            bar.update(len(scored.outputs))
    return out


def recent_interest_along(
    checkpoint: Checkpoint, sequences: Sequence[UserSequence], recent_events: int, m: int, progress: bool = True
) -> list[list[Distribution]]:
    """The recent interest after every event of every sequence, as the worker's detector reads it."""
    tokenizer = checkpoint.tokenizer
    windows = [
        _window(sequence, max(0, t + 1 - recent_events), t + 1) for sequence in sequences for t in range(len(sequence))
    ]
    flat: list[Distribution] = []
    chunk = 4096
    with tqdm(total=len(windows), desc="recent interest", unit="event", leave=False, disable=not progress) as bar:
        for start in range(0, len(windows), chunk):
            part = windows[start : start + chunk]
            flat += recent_interest(
                checkpoint.model, tokenizer, [tokenizer.encode(w) for w in part], [w.categories for w in part], m
            )
            bar.update(len(part))
    out, start = [], 0
    for sequence in sequences:
        out.append(flat[start : start + len(sequence)])
        start += len(sequence)
    return out


def _window(sequence: UserSequence, start: int, stop: int) -> UserSequence:
    return replace(
        sequence,
        items=sequence.items[start:stop],
        categories=sequence.categories[start:stop],
        behaviors=sequence.behaviors[start:stop],
        timestamps=None if sequence.timestamps is None else sequence.timestamps[start:stop],
    )
