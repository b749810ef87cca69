"""From raw input messages to interest updates: the worker's logic, without Kafka.

:meth:`InterestPipeline.admit` runs once per message: it validates, deduplicates and
orders the event into the user's :class:`~stream.state.UserState`.
:meth:`InterestPipeline.score` runs once per micro-batch: one batched engine step for all
admitted events, then one interest update each: a dict with exactly the fields of
:class:`~topics.records.InterestUpdate` (a plain dict, because a Faust record costs more
than the model step per event).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.engine import EventTokens, IncrementalEngine, UserEvent
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
    """An event to score: the user's kept events as they stood just after it was accepted.

    The update is the interest after ``events[index]``, the user's latest event (which is
    this one, unless it was reordered before later ones: then ``reorder`` is set and the
    user's cache must be rebuilt). ``position`` is its absolute position.
    """

    user_id: str
    event_id: str
    ts: int
    events: tuple[StoredEvent, ...]
    first_position: int
    before_ts: int | None
    reorder: bool

    @property
    def index(self) -> int:
        return len(self.events) - 1

    @property
    def position(self) -> int:
        return self.first_position + self.index


@dataclass(frozen=True, slots=True)
class Refused:
    dead_letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to publish: a ``redelivered`` message or a ``duplicate`` event id."""

    user_id: str
    event_id: str
    why: str


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
        self.keep = checkpoint.config.receptive_field
        self.engine = IncrementalEngine(
            checkpoint.model, checkpoint.model_version, self, budget_bytes=settings.cache_mb * 2**20, top_k=0
        )
        self._snapshots: dict[tuple[str, int], Admitted] = {}
        self._last_published: dict[str, np.ndarray] = {}

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
        stored = StoredEvent(event.event_id, event.item_id, event.category_id, event.event_type, event.ts)
        outcome = state.accept(stored, self.keep, int(self.settings.lateness_s * 1000), (partition, offset))
        if outcome in ("duplicate", "redelivered"):
            return Ignored(event.user_id, event.event_id, outcome)
        if outcome == "late":
            late = Rejection("late", f"ts {event.ts} is more than {self.settings.lateness_s:g} s before {state.last_ts}")
            return Refused(dead_letter(raw, late, partition, offset, ids))
        events = tuple(state.events)
        return Admitted(
            event.user_id, event.event_id, event.ts, events, state.first_position, state.before_ts,
            reorder=outcome == "reordered",
        )  # fmt: skip

    # -- HistorySource for the engine: the snapshots of the batch being scored --------

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        admitted = self._snapshots[(user, position)]
        stop = admitted.index
        start = max(0, stop - count)
        return self._tokens(admitted, start, stop)

    def _tokens(self, admitted: Admitted, start: int, stop: int) -> TokenSequence:
        rows = [self._event_tokens(admitted, i) for i in range(start, stop)]
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, 4).T
        return TokenSequence(*(np.ascontiguousarray(c) for c in columns))

    def _event_tokens(self, admitted: Admitted, i: int) -> tuple[int, int, int, int]:
        """Model ids of ``admitted.events[i]``, its time gap taken from the event before."""
        events = admitted.events
        event = events[i]
        previous = events[i - 1].ts if i > 0 else admitted.before_ts
        gap = None if previous is None else (event.ts - previous) // 1000
        return self.tokenizer.encode_event(event.item_id, event.category_id, event.event_type, gap)

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
        steps = [UserEvent(a.user_id, a.position, EventTokens(*self._event_tokens(a, a.index))) for a in segment]
        try:
            result = self.engine.step(steps)
        finally:
            self._snapshots = {}
        probs = result.category_probs.astype(np.float64)
        entropy = -torch.special.xlogy(torch.from_numpy(probs), torch.from_numpy(probs)).sum(dim=1).numpy()
        k = min(self.settings.top_k, probs.shape[1] - OOV_ID - 1)
        # padding and the generator's own OOV mass are not categories
        best = torch.from_numpy(result.category_probs[:, OOV_ID + 1 :]).topk(k, dim=1).indices.numpy() + OOV_ID + 1
        return [
            self._update(a, result.model_version, probs[row], float(entropy[row]), best[row], result.copy_weights[row], result.copy_positions[row])
            for row, a in enumerate(segment)
        ]  # fmt: skip

    def _update(
        self, admitted: Admitted, model_version: str, probs: np.ndarray, entropy: float, best: np.ndarray,
        copy_weights: np.ndarray, copy_positions: np.ndarray,
    ) -> Update | None:  # fmt: skip
        threshold = self.settings.publish_threshold
        previous = self._last_published.get(admitted.user_id)
        if threshold > 0 and previous is not None and 0.5 * np.abs(probs - previous).sum() <= threshold:
            return None
        self._last_published[admitted.user_id] = probs
        by_category = self._top_raw_categories(admitted, probs, best, copy_weights, copy_positions)
        top = sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))[: self.settings.top_k]
        return {
            "user_id": admitted.user_id,
            "event_id": admitted.event_id,
            "ts": admitted.ts,
            "model_version": model_version,
            "top_categories": [{"category_id": c, "probability": round(p, 6)} for c, p in top],
            "entropy": round(entropy, 6),
            "sequence_length": admitted.position + 1,
        }

    def _top_raw_categories(
        self, admitted: Admitted, probs: np.ndarray, best: np.ndarray, copy_weights: np.ndarray, copy_positions: np.ndarray
    ) -> dict[str, float]:
        """Candidates for the top categories, by raw category id: the ``best`` in the
        vocabulary, and the categories outside it that the copy head points at (their mass is
        credited to them)."""
        vocabulary = self.tokenizer.categories
        out = {vocabulary.decode(int(i)): float(probs[i]) for i in best if probs[i] > 0}
        for slot in np.flatnonzero((copy_positions >= 0) & (copy_weights > 0)):
            category = admitted.events[copy_positions[slot] - admitted.first_position].category_id
            if category not in vocabulary:
                out[category] = out.get(category, 0.0) + float(copy_weights[slot])
        return out
