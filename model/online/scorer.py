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

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from model.data.events import StoredEvent
from model.data.loaders import UserSequence
from model.data.vocab import OOV_ID, Tokenizer, TokenSequence, Vocabulary
from model.net.checkpoint import Checkpoint
from model.net.predict import Scored, score_outputs
from model.net.transformer import InterestTransformer
from model.online.distribution import Distribution, copied_outside_vocabulary, from_model, from_model_rows
from model.online.engine import EventTokens, IncrementalEngine, StepResult, UserEvent
from model.online.recent import TokenWindows, window_interest
from model.online.stages import StageTimes


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


def encode_events(tokenizer: Tokenizer, events: Sequence[StoredEvent], previous: Sequence[int | None]) -> np.ndarray:
    """Model ids ``(N, 4)`` of ``events``, each time gap from the time of the event before it
    given in ``previous`` (``None``: no gap)."""
    if not events:
        return np.zeros((0, 4), dtype=np.int64)
    _, items, categories, behaviors, times = zip(*events, strict=True)  # the fields, column by column
    ts = np.array(times, dtype=np.int64)
    known = np.array([p is not None for p in previous], dtype=bool)
    before = np.array([p or 0 for p in previous], dtype=np.int64)
    return np.stack(
        [
            tokenizer.items.encode_many(items),
            tokenizer.categories.encode_many(categories),
            tokenizer.behaviors.encode_many(behaviors),
            tokenizer.gaps.buckets((ts - before) // 1000, known),
        ],
        axis=1,
    )


def window_tokens(
    tokenizer: Tokenizer, window: UserWindow, start: int, stop: int, opens_window: bool = False
) -> TokenSequence:
    """Model ids of ``window.events[start:stop]``, each time gap taken from the event before
    (none for the first when the window ``opens_window``, or when nothing came before it)."""
    events = window.events[start:stop]
    first = None if opens_window else window.events[start - 1].ts if start > 0 else window.before_ts
    ids = encode_events(tokenizer, events, [first, *(e.ts for e in events[:-1])][: len(events)])
    return TokenSequence(*(np.ascontiguousarray(column) for column in ids.T))


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
    (``probs``, float32 as the model computes it) and its entropy in nats (float64), the
    interest by raw category (``top_k`` kept), and the recent interest, over the vocabulary
    (``recent_probs``) and by raw category (``recent``, ``top_m`` kept)."""

    model_version: str
    probs: np.ndarray
    entropy: np.ndarray
    interest: list[Distribution]
    recent_probs: np.ndarray
    recent: list[Distribution]


class Scorer(Protocol):
    """What the worker's pipeline scores with: :class:`InterestScorer`, or the uncached
    reference :class:`~model.online.reference.FullRecompute`."""

    times: StageTimes

    def score(self, windows: Sequence[UserWindow]) -> BatchInterest: ...

    def swap(self, checkpoint: Checkpoint, recent_events: int, top_m: int) -> None: ...

    def forget(self, user_id: str) -> None: ...


class InterestScorer:
    """Both readings for a batch of windows, the full-history one through a cached engine.

    ``score`` takes windows of which only the first may follow a change to its user's past
    (a reordered event); :meth:`forget` that user first.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        budget_bytes: int,
        top_k: int,
        recent_events: int,
        top_m: int,
        cache_dtype: torch.dtype = torch.float32,
    ):
        self.engine = IncrementalEngine(
            checkpoint.model,
            checkpoint.model_version,
            budget_bytes=budget_bytes,
            cache_dtype=cache_dtype,
            top_k=0,
            top_categories=top_k,
            entropy=True,
        )
        self.tokenizer = checkpoint.tokenizer
        self.top_k = top_k
        self.recent_events = recent_events
        self.top_m = top_m
        self.times = StageTimes()

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
        with self.times.stage("engine"):  # the tokens of both readings count here
            tokens = BatchTokens.of(self.tokenizer, windows, self.recent_events)
            result, interest = self._interest(windows, tokens.newest)
        with self.times.stage("recent"):
            recent_probs, recent = recent_interest(
                self.engine.model, self.tokenizer, tokens.recent, tokens.recent_categories, self.top_m
            )
        assert result.entropy is not None  # the engine was asked for it
        return BatchInterest(
            result.model_version, result.category_probs, result.entropy, interest, recent_probs, recent
        )

    def _interest(self, windows: Sequence[UserWindow], newest: np.ndarray) -> tuple[StepResult, list[Distribution]]:
        """The engine's step for the windows' newest events, and its interest by raw category."""
        tokenizer = self.tokenizer
        steps = [
            UserEvent(w.user_id, w.position, EventTokens(*row)) for w, row in zip(windows, newest.tolist(), strict=True)
        ]
        result = self.engine.step(steps, WindowHistory(tokenizer, windows))
        probs = result.category_probs
        copied = {}
        outside = (result.copy_categories == OOV_ID) & (result.copy_positions >= 0) & (result.copy_weights > 0)
        for row in np.flatnonzero(outside.any(axis=1)).tolist():  # rare: only these rows can copy unknown categories
            window, weights, positions = windows[row], result.copy_weights[row], result.copy_positions[row]
            slots = np.flatnonzero((positions >= 0) & (weights > 0))
            categories = [window.events[positions[s] - window.first_position].category_id for s in slots]
            copied[row] = copied_outside_vocabulary(weights[slots], categories, tokenizer.categories)
        return result, from_model_rows(probs, result.best_categories, tokenizer.categories, copied, self.top_k)


_TS, _CATEGORY = (
    operator.itemgetter(StoredEvent._fields.index("ts")),
    operator.itemgetter(StoredEvent._fields.index("category_id")),
)


@dataclass(frozen=True, slots=True)
class BatchTokens:
    """A batch's model ids, each event tokenised once: each window's newest event with its
    time gap (``newest``, ``(B, 4)``), and its last ``recent_events`` events, the first with
    no gap (``recent``; windows of one user share the rows of their common events), with the
    raw category of each row of ``recent.tokens`` (``recent_categories``)."""

    newest: np.ndarray
    recent: TokenWindows
    recent_categories: list[str]

    @classmethod
    def of(cls, tokenizer: Tokenizer, windows: Sequence[UserWindow], recent_events: int) -> BatchTokens:
        """``windows`` are taken in order; those of a user at rising positions share the rows
        of their common events (a window that does not follow on from the user's rows, as
        after a reorder, starts them afresh)."""
        events: list[StoredEvent] = []
        event_positions: list[int] = []
        previous: list[int | None] = []
        known: dict[str, tuple[int, list[int]]] = {}  # user -> (position of their first row, rows by position)
        rows: list[int] = []
        openers, newest, lengths = [], [], []
        for w in windows:
            position = w.first_position + max(0, w.index + 1 - recent_events)  # the window's first event
            base, user_rows = known.get(w.user_id, (position, []))
            if not base <= position <= base + len(user_rows):
                base, user_rows = position, []
            known[w.user_id] = (base, user_rows)
            start = base + len(user_rows) - w.first_position  # the window's first event not tokenised yet
            if start <= w.index:
                kept = w.events[start:]
                user_rows.extend(range(len(events), len(events) + len(kept)))
                events.extend(kept)
                event_positions.extend(range(w.first_position + start, w.position + 1))
                previous.append(w.events[start - 1].ts if start else w.before_ts)
                previous.extend(map(_TS, kept[:-1]))
            window_rows = user_rows[position - base : w.position - base + 1]
            rows.extend(window_rows)
            openers.append(window_rows[0])
            newest.append(window_rows[-1])
            lengths.append(len(window_rows))
        tokens = encode_events(tokenizer, events, previous)
        lengths_a = np.asarray(lengths, dtype=np.int64)
        rows_a = np.asarray(rows, dtype=np.int64)
        opening = tokens[openers]
        opening[:, 3] = 0  # each recent window opens without a gap: a row of its own
        rows_a[np.cumsum(lengths_a) - lengths_a] = len(tokens) + np.arange(len(windows))
        used, rows_a = np.unique(rows_a, return_inverse=True)  # the rows some window reads, no others
        categories = list(map(_CATEGORY, events))
        categories += [categories[r] for r in openers]
        positions = np.asarray(event_positions, dtype=np.int64)
        positions = np.concatenate([positions, positions[openers]])[used]
        recent = TokenWindows(np.concatenate([tokens, opening])[used], lengths_a, rows_a, positions)
        return cls(tokens[newest], recent, [categories[r] for r in used.tolist()])


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
    model: InterestTransformer, tokenizer: Tokenizer, windows: TokenWindows, raw_categories: Sequence[str], m: int
) -> tuple[np.ndarray, list[Distribution]]:
    """The interest after the last event of each window (tokens, and the raw category of each
    row of ``windows.tokens``), reading that window only (:func:`model.online.recent.window_interest`): over the
    vocabulary, and by raw category with ``m`` kept."""
    out, copied_t = window_interest(model, windows, min(m, model.config.n_categories - 1))
    probs, best = out.probs.numpy(), out.best
    weights = copied_t.numpy()
    starts, lengths, token_rows = windows.starts, windows.lengths, windows.token_rows
    copied = {}
    outside = windows.tokens[token_rows, 1] == OOV_ID
    for row in np.unique(np.repeat(np.arange(len(windows)), lengths)[outside]).tolist():  # only these can copy unknowns
        start, length = int(starts[row]), int(lengths[row])
        categories = [raw_categories[r] for r in token_rows[start : start + length].tolist()]
        copied[row] = copied_outside_vocabulary(weights[row, :length], categories, tokenizer.categories)
    return probs, from_model_rows(probs, best, tokenizer.categories, copied, m)


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
    flat: list[Distribution] = []
    pending: list[tuple[np.ndarray, np.ndarray, list[str]]] = []  # windows, lengths, categories per sequence

    def flush() -> None:
        windows = TokenWindows(np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending]))
        categories = [c for p in pending for c in p[2]]
        flat.extend(recent_interest(checkpoint.model, tokenizer, windows, categories, m)[1])
        bar.update(len(windows))
        pending.clear()

    total = sum(len(s) for s in sequences)
    with tqdm(total=total, desc="recent interest", unit="event", leave=False, disable=not progress) as bar:
        for sequence in sequences:
            tokens = tokenizer.encode(sequence)
            columns = np.stack([tokens.items, tokens.categories, tokens.behaviors, tokens.gaps], axis=1)
            firsts = np.maximum(0, np.arange(len(sequence)) + 1 - recent_events)
            rows = np.concatenate([np.arange(f, t + 1) for t, f in enumerate(firsts.tolist())])
            lengths = np.arange(len(sequence)) + 1 - firsts
            windowed = columns[rows]
            windowed[np.cumsum(lengths) - lengths, 3] = 0  # each window opens without a gap
            pending.append((windowed, lengths, [sequence.categories[r] for r in rows.tolist()]))
            if sum(len(p[1]) for p in pending) >= 4096:
                flush()
        if pending:
            flush()
    out, start = [], 0
    for sequence in sequences:
        out.append(flat[start : start + len(sequence)])
        start += len(sequence)
    return out
