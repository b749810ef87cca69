"""From raw input messages to interest updates: the worker's logic, without Kafka.

:meth:`InterestPipeline.admit` runs once per message, where the Faust agent may write the
user's table row: it validates, deduplicates and orders the event into the
:class:`~stream.state.UserState`. :meth:`InterestPipeline.score` runs once per
micro-batch: one batched engine step for all admitted events, then one interest update
each: a dict with exactly the fields of :class:`~topics.records.InterestUpdate` (built as
a plain dict because a Faust record costs more than the model step per event).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.checkpoint import Checkpoint
from model.engine import EventTokens, IncrementalEngine, StepResult, UserEvent
from model.vocab import OOV_ID, TokenSequence, Tokenizer
from stream.settings import Settings
from stream.state import StoredEvent, UserState
from stream.validation import Rejection, validate
from topics.records import ClickEvent, DeadLetter
from topics.specs import EVENTS


Update = dict[str, object]
"""An interest update: the fields of :class:`topics.records.InterestUpdate`."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """An event to score: the user's kept events as they stood, and which one to score.

    ``position`` is the absolute position of ``events[index]``. ``reorder`` means the
    event landed before later ones, so the user's cache must be rebuilt.
    """

    user_id: str
    event_id: str
    ts: int
    events: tuple[StoredEvent, ...]
    first_position: int
    before_ts: int | None
    index: int
    reorder: bool

    @property
    def position(self) -> int:
        return self.first_position + self.index


@dataclass(frozen=True, slots=True)
class Refused:
    dead_letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to publish: a ``duplicate`` event id, or a ``stale_redelivery``: a message
    redelivered after a crash with more than ``redelivery_margin`` of the user's events
    admitted after it, so its earlier context is no longer kept and re-scoring it would not
    be exact. Its update was almost always published before the crash; if the crash came
    between admitting it and publishing its batch, that update is lost (counted)."""

    user_id: str
    event_id: str
    why: str = "duplicate"


def dead_letter(raw: bytes, rejection: Rejection, partition: int, offset: int, event: dict[str, str] | None = None) -> DeadLetter:
    return DeadLetter(
        reason=rejection.reason,
        detail=rejection.detail,
        source_topic=EVENTS.name,
        source_partition=partition,
        source_offset=offset,
        original_base64=base64.b64encode(raw).decode(),
        user_id=(event or {}).get("user_id"),
        event_id=(event or {}).get("event_id"),
    )


class InterestPipeline:
    """Validation, user state and the incremental engine for one worker."""

    def __init__(self, checkpoint: Checkpoint, settings: Settings):
        self.settings = settings
        self.tokenizer: Tokenizer = checkpoint.tokenizer
        self.context = checkpoint.config.receptive_field - 1
        self.keep = checkpoint.config.receptive_field + settings.redelivery_margin
        self.engine = IncrementalEngine(
            checkpoint.model, checkpoint.model_version, self, budget_bytes=settings.cache_mb * 2**20, top_k=0
        )
        self._snapshots: dict[tuple[str, int], Admitted] = {}
        self._last_published: dict[str, np.ndarray] = {}

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    def admit(
        self, raw: bytes, key: bytes | None, partition: int, offset: int, state: UserState, now_ms: int
    ) -> Admitted | Refused | Ignored:
        """Decide what one message does; updates ``state`` in place when it is accepted."""
        checked = validate(raw, now_ms, self.settings.max_string_length)
        if isinstance(checked, Rejection):
            return Refused(dead_letter(raw, checked, partition, offset))
        event: ClickEvent = checked
        ids = {"user_id": event.user_id, "event_id": event.event_id}
        if key != event.user_id.encode():
            found = "no message key" if key is None else f"message key {key[:40]!r}"
            wrong_key = Rejection("wrong_key", f"{found}; messages must be keyed by user id")
            return Refused(dead_letter(raw, wrong_key, partition, offset, ids))
        stored = StoredEvent(event.event_id, event.item_id, event.category_id, event.event_type, event.ts, partition, offset)
        outcome = state.accept(stored, self.keep, int(self.settings.lateness_s * 1000))
        if outcome == "duplicate":
            return Ignored(event.user_id, event.event_id)
        if outcome == "late":
            late = Rejection("late", f"ts {event.ts} is more than {self.settings.lateness_s:g} s before {state.last_ts}")
            return Refused(dead_letter(raw, late, partition, offset, ids))
        events = tuple(state.events)
        if outcome == "redelivered":  # score the event itself again, exactly as first published
            index = next(i for i, e in enumerate(events) if e.event_id == event.event_id)
            if index < self.context and state.first_position > 0:
                return Ignored(event.user_id, event.event_id, "stale_redelivery")
        else:  # the interest after the user's latest event (the new one, unless reordered)
            index = len(events) - 1
        return Admitted(
            event.user_id, event.event_id, event.ts, events, state.first_position, state.before_ts, index,
            reorder=outcome != "appended",
        )  # fmt: skip

    # -- HistorySource for the engine: the snapshots of the batch being scored --------

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        admitted = self._snapshots[(user, position)]
        stop = admitted.index
        start = max(0, stop - count)
        return self._tokens(admitted, start, stop)

    def _tokens(self, admitted: Admitted, start: int, stop: int) -> TokenSequence:
        events = admitted.events
        rows = []
        for i in range(start, stop):
            e = events[i]
            previous = events[i - 1].ts if i > 0 else admitted.before_ts
            gap = None if previous is None else (e.ts - previous) // 1000
            rows.append(self.tokenizer.encode_event(e.item_id, e.category_id, e.event_type, gap))
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, 4).T
        return TokenSequence(*(np.ascontiguousarray(c) for c in columns))

    def score(self, batch: Sequence[Admitted]) -> list[Update | None]:
        """One update per admitted event, in order; ``None`` where the distribution moved
        less than the publish threshold."""
        if not batch:
            return []
        updates: list[Update | None] = []
        start = 0
        for stop in [i for i, a in enumerate(batch) if a.reorder and i > 0] + [len(batch)]:
            updates.extend(self._score_segment(batch[start:stop]))
            start = stop
        return updates

    def _score_segment(self, segment: Sequence[Admitted]) -> list[Update | None]:
        """Score events of which only the first may be a reorder (its user is rebuilt)."""
        if segment[0].reorder:
            self.engine.forget(segment[0].user_id)
        self._snapshots = {(a.user_id, a.position): a for a in segment}
        steps = []
        for a in segment:
            token = self._tokens(a, a.index, a.index + 1)
            tokens = EventTokens(*(int(getattr(token, name)[0]) for name in TokenSequence.__slots__))
            steps.append(UserEvent(a.user_id, a.position, tokens))
        try:
            result = self.engine.step(steps)
        finally:
            self._snapshots = {}
        return [self._update(a, result, row) for row, a in enumerate(segment)]

    def _update(self, admitted: Admitted, result: StepResult, row: int) -> Update | None:
        probs = result.category_probs[row].astype(np.float64)
        threshold = self.settings.publish_threshold
        previous = self._last_published.get(admitted.user_id)
        if threshold > 0 and previous is not None and 0.5 * np.abs(probs - previous).sum() <= threshold:
            return None
        self._last_published[admitted.user_id] = probs
        by_category = self._top_raw_categories(admitted, probs, result.copy_weights[row], result.copy_positions[row])
        top = sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))[: self.settings.top_k]
        nonzero = probs[probs > 0]
        return {
            "user_id": admitted.user_id,
            "event_id": admitted.event_id,
            "ts": admitted.ts,
            "model_version": result.model_version,
            "top_categories": [{"category_id": c, "probability": round(p, 6)} for c, p in top],
            "entropy": round(float(-(nonzero * np.log(nonzero)).sum()), 6),
            "sequence_length": admitted.position + 1,
        }

    def _top_raw_categories(
        self, admitted: Admitted, probs: np.ndarray, copy_weights: np.ndarray, copy_positions: np.ndarray
    ) -> dict[str, float]:
        """Candidates for the top categories, by raw category id: the ``top_k`` most likely
        in the vocabulary, and the categories outside it that the copy head points at (their
        mass is credited to them). The generator's own OOV mass is not a category."""
        vocabulary = self.tokenizer.categories
        scores = probs.copy()
        scores[: OOV_ID + 1] = -1.0
        k = min(self.settings.top_k, len(scores) - OOV_ID - 1)
        best = np.argpartition(-scores, k - 1)[:k] if k > 0 else []
        out = {vocabulary.decode(int(i)): float(probs[i]) for i in best if probs[i] > 0}
        for weight, position in zip(copy_weights, copy_positions):
            if position >= 0 and weight > 0:
                category = admitted.events[position - admitted.first_position].category_id
                if category not in vocabulary:
                    out[category] = out.get(category, 0.0) + float(weight)
        return out
