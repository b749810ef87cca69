"""From raw input messages to interest updates: the worker's logic, without Kafka.

:meth:`InterestPipeline.admit` runs once per message: it validates, deduplicates and
orders the event into the user's :class:`~stream.worker.state.UserState`.
:meth:`InterestPipeline.score` runs once per micro-batch: one batched engine step for all
admitted events, then one interest update each: a dict with exactly the fields of
:class:`~topics.records.InterestUpdate` (a plain dict, because a Faust record costs more
than the model step per event).
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.net.checkpoint import Checkpoint
from model.online.detector import Shift, ShiftDetector
from model.online.distribution import Distribution, from_model
from model.online.engine import EventTokens, IncrementalEngine, UserEvent
from model.online.recent import recent_interest
from model.data.events import StoredEvent
from model.data.vocab import OOV_ID, TokenSequence, Tokenizer
from stream.worker.privacy import Pseudonymiser
from stream.settings import Settings
from stream.worker.state import UserState
from stream.worker.validation import Rejection, printable, validate
from topics.records import ClickEvent, DeadLetter
from topics.specs import EVENTS


Update = dict[str, object]
"""An interest update: the fields of :class:`topics.records.InterestUpdate`."""
ShiftRecord = dict[str, object]
"""An interest shift: the fields of :class:`topics.records.InterestShift`."""
SHIFT_NAMESPACE = uuid.UUID("5b1f0c3e-8d3a-4c47-9a51-6f0e2f7d9c10")


def shift_id(user_id: str, event_id: str) -> str:
    """The shift's idempotency key: a name-based UUID of the user and the triggering event.

    >>> shift_id("u1", "e1") == shift_id("u1", "e1") != shift_id("u1e", "1")
    True
    """
    return str(uuid.uuid5(SHIFT_NAMESPACE, json.dumps([user_id, event_id])))


SHIFTS_KEPT = 5  # shifts a user's row remembers, in brief


def brief(shift: ShiftRecord) -> dict[str, object]:
    """What a user's row keeps of a shift: enough to list and mark it, without the evidence."""
    return {
        "shift_id": shift["shift_id"],
        "event_id": shift["event_id"],
        "ts": shift["ts"],
        "sequence_length": shift["sequence_length"],
        "from": [c["category_id"] for c in shift["from_categories"]],  # type: ignore[attr-defined]
        "to": [c["category_id"] for c in shift["to_categories"]],  # type: ignore[attr-defined]
        "confidence": shift["confidence"],
    }


@dataclass(frozen=True, slots=True)
class Scored:
    """What one micro-batch publishes: an update per admitted event (``None`` where the
    distribution moved less than the publish threshold), and the shifts it raised."""

    updates: list[Update | None]
    shifts: list[ShiftRecord]


@dataclass(frozen=True, slots=True)
class Admitted:
    """An event to score: the user's kept events as they stood just after it was accepted.

    The update is the interest after ``events[index]``, the user's latest event (which is
    this one, unless it was reordered before later ones: then ``reorder`` is set and the
    user's cache must be rebuilt). ``position`` is its absolute position.
    """

    user_id: str
    event: StoredEvent
    events: tuple[StoredEvent, ...]
    first_position: int
    before_ts: int | None
    reorder: bool
    state: UserState  # the user's live state: its detector state and last shift change when the batch is scored

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def ts(self) -> int:
        return self.event.ts

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


class InterestPipeline:
    """Validation, user state, the incremental engine and the shift detector for one worker."""

    def __init__(self, checkpoint: Checkpoint, settings: Settings, detector: ShiftDetector | None = None):
        self.settings = settings
        self.tokenizer: Tokenizer = checkpoint.tokenizer
        self.keep = checkpoint.config.receptive_field
        self.engine = IncrementalEngine(
            checkpoint.model, checkpoint.model_version, self, budget_bytes=settings.cache_mb * 2**20, top_k=0
        )
        self.detector = detector or ShiftDetector()
        self._snapshots: dict[tuple[str, int], Admitted] = {}
        # only with a publish threshold: a copy of each recent user's last published distribution
        self._last_published: OrderedDict[str, np.ndarray] = OrderedDict()
        self.pseudonyms = Pseudonymiser(settings.pseudonym_key.encode())

    def swap(self, checkpoint: Checkpoint, detector: ShiftDetector) -> None:
        """Serve another checkpoint from the next batch on. Users' rows hold raw events, so each
        user's cache is rebuilt under the new model and vocabulary on their next event; their
        detector state (distributions over raw categories) carries over."""
        self.tokenizer = checkpoint.tokenizer
        self.keep = checkpoint.config.receptive_field
        self.engine.swap(checkpoint.model, checkpoint.model_version)
        self.detector = detector
        self._last_published.clear()

    def row_key(self, message_key: bytes) -> bytes:
        """The users-table key for a message key (the user id, pseudonymised when that is on)."""
        return self.pseudonyms.row_key(message_key)

    def forget_key(self, key: bytes | None) -> bytes | None:
        """The row key of the user a forget request (keyed by raw user id) names; ``None`` when
        its key is no user id an event could carry."""
        try:
            user = (key or b"").decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not user.strip() or len(user) > self.settings.max_string_length:
            return None
        return self.pseudonyms.user(user).encode()

    def forget(self, user_id: str) -> None:
        """Drop what this process holds in memory about a user (``user_id`` as stored)."""
        self.engine.forget(user_id)
        self._last_published.pop(user_id, None)

    def dead_letter(
        self, raw: bytes, rejection: Rejection, partition: int, offset: int, event: ClickEvent | None = None
    ) -> DeadLetter:
        """The dead letter of an input message; under pseudonymisation it keeps no raw bytes and
        names the user (``event``, already pseudonymised) by pseudonym."""
        return DeadLetter.of(
            rejection.reason, rejection.detail, EVENTS.name, partition, offset, raw,
            None if event is None else event.user_id, None if event is None else event.event_id,
            copy=not self.pseudonyms.enabled,
        )  # fmt: skip

    def internal_error(self, raw: bytes, partition: int, offset: int, error: Exception) -> DeadLetter:
        """The dead letter of a message whose admission raised: a bug, kept apart from its batch.
        The exception's text may quote the input, so under pseudonymisation only its type is kept."""
        detail = type(error).__name__ if self.pseudonyms.enabled else f"{type(error).__name__}: {printable(str(error))}"
        return DeadLetter.of("internal_error", detail, EVENTS.name, partition, offset, raw, copy=not self.pseudonyms.enabled)

    def check(self, raw: bytes, key: bytes | None, partition: int, offset: int, now_ms: int) -> ClickEvent | Refused:
        """Validate one message and its key; the event comes back pseudonymised when that is on."""
        checked = validate(raw, now_ms, self.settings.max_string_length, self.settings.max_event_bytes)
        if isinstance(checked, Rejection):
            return Refused(self.dead_letter(raw, checked, partition, offset))
        event: ClickEvent = checked
        if self.pseudonyms.enabled:
            event = ClickEvent(
                event_id=self.pseudonyms.event(event.event_id), user_id=self.pseudonyms.user(event.user_id),
                item_id=event.item_id, category_id=event.category_id, event_type=event.event_type, ts=event.ts,
            )  # fmt: skip
        if key != checked.user_id.encode():
            if self.pseudonyms.enabled:  # the key may be someone's raw id: not repeated
                found = "no message key" if key is None else "a message key other than the event's user_id"
            else:
                found = "no message key" if key is None else f"message key {printable(repr(key), 60)}"
            wrong_key = Rejection("wrong_key", f"{found}; messages must be keyed by user id")
            return Refused(self.dead_letter(raw, wrong_key, partition, offset, event))
        return event

    def accept(self, event: ClickEvent, raw: bytes, state: UserState, partition: int, offset: int) -> Admitted | Refused | Ignored:
        """Order a checked event into its user's ``state`` (in place); say what it does."""
        stored = StoredEvent(event.event_id, event.item_id, event.category_id, event.event_type, event.ts)
        outcome = state.accept(stored, self.keep, int(self.settings.lateness_s * 1000), (partition, offset))
        if outcome in ("duplicate", "redelivered"):
            return Ignored(event.user_id, event.event_id, outcome)
        if outcome == "late":
            late = Rejection("late", f"ts {event.ts} is more than {self.settings.lateness_s:g} s before {state.last_ts}")
            return Refused(self.dead_letter(raw, late, partition, offset, event))
        if outcome == "conflicting_duplicate":
            conflict = Rejection("conflicting_duplicate", "an event with this event_id and other content was accepted before")
            return Refused(self.dead_letter(raw, conflict, partition, offset, event))
        return Admitted(
            event.user_id, stored, tuple(state.events), state.first_position, state.before_ts,
            reorder=outcome == "reordered", state=state,
        )  # fmt: skip

    def admit(
        self, raw: bytes, key: bytes | None, partition: int, offset: int, state: UserState, now_ms: int
    ) -> Admitted | Refused | Ignored:
        """:meth:`check`, then :meth:`accept` into ``state``."""
        checked = self.check(raw, key, partition, offset, now_ms)
        return checked if isinstance(checked, Refused) else self.accept(checked, raw, state, partition, offset)

    # -- HistorySource for the engine: the snapshots of the batch being scored --------

    def events_before(self, user: str, position: int, count: int) -> TokenSequence:
        admitted = self._snapshots[(user, position)]
        stop = admitted.index
        start = max(0, stop - count)
        return self._tokens(admitted, start, stop)

    def _tokens(self, admitted: Admitted, start: int, stop: int, window: bool = False) -> TokenSequence:
        """Model ids of ``admitted.events[start:stop]``; a ``window`` knows no gap before its first."""
        rows = [self._event_tokens(admitted, i, opens_window=window and i == start) for i in range(start, stop)]
        columns = np.asarray(rows, dtype=np.int64).reshape(-1, 4).T
        return TokenSequence(*(np.ascontiguousarray(c) for c in columns))

    def _event_tokens(self, admitted: Admitted, i: int, opens_window: bool = False) -> tuple[int, int, int, int]:
        """Model ids of ``admitted.events[i]``, its time gap taken from the event before (none
        for the first event of a window)."""
        events = admitted.events
        event = events[i]
        previous = None if opens_window else events[i - 1].ts if i > 0 else admitted.before_ts
        gap = None if previous is None else (event.ts - previous) // 1000
        return self.tokenizer.encode_event(event.item_id, event.category_id, event.event_type, gap)

    def _recent_interest(self, segment: Sequence[Admitted]) -> list[Distribution]:
        """Each event's input to the detector: the model's interest from the user's last
        ``recent_events`` events alone (model/online/recent.py)."""
        windows, categories = [], []
        for a in segment:
            first = max(0, a.index + 1 - self.detector.settings.recent_events)
            windows.append(self._tokens(a, first, a.index + 1, window=True))
            categories.append([e.category_id for e in a.events[first : a.index + 1]])
        return recent_interest(self.engine.model, self.tokenizer, windows, categories, self.detector.settings.top_m)

    def score(self, batch: Sequence[Admitted]) -> Scored:
        """Updates for the admitted events, in order, and the shifts they raise."""
        scored = Scored([], [])
        start = 0
        for stop in [i for i, a in enumerate(batch) if a.reorder and i > 0] + [len(batch)]:
            if start < stop:
                self._score_segment(batch[start:stop], scored)
            start = stop
        return scored

    def _score_segment(self, segment: Sequence[Admitted], scored: Scored) -> None:
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
        recent = self._recent_interest(segment)
        for row, admitted in enumerate(segment):
            copied = self._copied_outside_vocabulary(admitted, result.copy_weights[row], result.copy_positions[row])
            distribution = from_model(probs[row], best[row], self.tokenizer.categories, copied, self.settings.top_k)
            scored.updates.append(self._update(admitted, result.model_version, probs[row], float(entropy[row]), distribution))
            shift = self.detector.update(admitted.state.detector, recent[row], admitted.event)
            if shift is not None:
                record = self._shift(admitted, result.model_version, shift)
                admitted.state.shifts.append(brief(record))
                del admitted.state.shifts[:-SHIFTS_KEPT]
                scored.shifts.append(record)

    def _update(
        self, admitted: Admitted, model_version: str, probs: np.ndarray, entropy: float, distribution: Distribution
    ) -> Update | None:
        threshold = self.settings.publish_threshold
        previous = self._last_published.get(admitted.user_id)
        if threshold > 0 and previous is not None and 0.5 * np.abs(probs - previous).sum() <= threshold:
            return None
        if threshold > 0:
            self._last_published[admitted.user_id] = probs.astype(np.float32)  # a copy: the batch's matrix may go
            self._last_published.move_to_end(admitted.user_id)
            while len(self._last_published) > self.settings.state_cache_users:
                self._last_published.popitem(last=False)  # that user's next update is published
        top = sorted(distribution.items(), key=lambda kv: (-kv[1], kv[0]))[: self.settings.top_k]
        return {
            "user_id": admitted.user_id,
            "event_id": admitted.event_id,
            "ts": admitted.ts,
            "model_version": model_version,
            "top_categories": [{"category_id": c, "probability": round(p, 6)} for c, p in top],
            "entropy": round(entropy, 6),
            "sequence_length": admitted.position + 1,
        }

    @staticmethod
    def _shift(admitted: Admitted, model_version: str, shift: Shift) -> ShiftRecord:
        def moves(changes: Sequence) -> list[dict[str, object]]:  # type: ignore[type-arg]
            return [{"category_id": m.category_id, "before": round(m.before, 6), "after": round(m.after, 6)} for m in changes]

        return {
            "shift_id": shift_id(admitted.user_id, admitted.event_id),
            "user_id": admitted.user_id,
            "event_id": admitted.event_id,
            "ts": admitted.ts,
            "model_version": model_version,
            "from_categories": moves(shift.from_categories),
            "to_categories": moves(shift.to_categories),
            "divergence": round(shift.divergence, 6),
            "statistic": round(shift.statistic, 6),
            "confidence": None if shift.confidence is None else round(shift.confidence, 6),
            "evidence": [{**e.event._asdict(), "weight": round(e.weight, 6)} for e in shift.evidence],
            "sequence_length": admitted.position + 1,
        }

    def _copied_outside_vocabulary(self, admitted: Admitted, copy_weights: np.ndarray, copy_positions: np.ndarray) -> dict[str, float]:
        """The copy head's mass on the user's events whose category is outside the vocabulary, by raw id."""
        vocabulary = self.tokenizer.categories
        out: dict[str, float] = {}
        for slot in np.flatnonzero((copy_positions >= 0) & (copy_weights > 0)):
            category = admitted.events[copy_positions[slot] - admitted.first_position].category_id
            if category not in vocabulary:
                out[category] = out.get(category, 0.0) + float(copy_weights[slot])
        return out
