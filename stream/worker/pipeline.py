"""From raw input messages to interest updates: the worker's logic, without Kafka.

:meth:`InterestPipeline.admit` runs once per message: it validates, deduplicates and
orders the event into the user's :class:`~stream.worker.state.UserState`.
:meth:`InterestPipeline.score` runs once per micro-batch: one batched engine step for all
admitted events, then one :class:`~topics.records.InterestUpdate` each and the
:class:`~topics.records.InterestShift` records their users' detectors raise.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.data.events import StoredEvent
from model.net.checkpoint import Checkpoint
from model.online.detector import CategoryMove, Shift, ShiftDetector
from model.online.distribution import Distribution
from model.online.scorer import InterestScorer, Scorer, UserWindow
from stream.settings import Settings
from stream.worker.privacy import Pseudonymiser
from stream.worker.state import ShiftBrief, UserState
from stream.worker.validation import Rejection, printable, validate
from topics.records import (
    CategoryChange,
    CategoryProbability,
    ClickEvent,
    DeadLetter,
    InterestShift,
    InterestUpdate,
    ShiftEvidence,
)
from topics.specs import EVENTS

SHIFT_NAMESPACE = uuid.UUID("5b1f0c3e-8d3a-4c47-9a51-6f0e2f7d9c10")


def shift_id(user_id: str, event_id: str) -> str:
    """The shift's idempotency key: a name-based UUID of the user and the triggering event.

    >>> shift_id("u1", "e1") == shift_id("u1", "e1") != shift_id("u1e", "1")
    True
    """
    return str(uuid.uuid5(SHIFT_NAMESPACE, json.dumps([user_id, event_id])))


SHIFTS_KEPT = 5  # shifts a user's row remembers, in brief


def _by_mass_then_name(entry: tuple[str, float]) -> tuple[float, str]:
    return -entry[1], entry[0]


def brief(shift: InterestShift) -> ShiftBrief:
    """What a user's row keeps of a shift: enough to list and mark it, without the evidence."""
    return {
        "shift_id": shift.shift_id,
        "event_id": shift.event_id,
        "ts": shift.ts,
        "sequence_length": shift.sequence_length,
        "from": [c.category_id for c in shift.from_categories],
        "to": [c.category_id for c in shift.to_categories],
        "confidence": shift.confidence,
    }


@dataclass(frozen=True, slots=True)
class Scored:
    """What one micro-batch publishes: an update per admitted event (``None`` where the
    distribution moved less than the publish threshold), and the shifts it raised."""

    updates: list[InterestUpdate | None]
    shifts: list[InterestShift]


@dataclass(frozen=True, slots=True)
class Admitted:
    """An event to score: its user's kept events as they stood just after it was accepted.

    The update is the interest after ``window.event``, the user's latest event (which is
    ``event``, unless that was reordered before later ones: then ``reorder`` is set and the
    user's cache must be rebuilt).
    """

    event: StoredEvent
    window: UserWindow
    reorder: bool
    state: UserState  # the user's live state: its detector state and last shift change when the batch is scored

    @property
    def user_id(self) -> str:
        return self.window.user_id

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def ts(self) -> int:
        return self.event.ts

    @property
    def position(self) -> int:
        return self.window.position


@dataclass(frozen=True, slots=True)
class Refused:
    dead_letter: DeadLetter


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to publish: a ``redelivered`` message or a ``duplicate`` event id."""

    user_id: str
    event_id: str
    why: str


def serving_scorer(checkpoint: Checkpoint, settings: Settings, detector: ShiftDetector) -> InterestScorer:
    """The cached scorer a worker serves ``checkpoint`` with, sized by its settings."""
    return InterestScorer(
        checkpoint,
        budget_bytes=settings.cache_mb * 2**20,
        top_k=settings.top_k,
        recent_events=detector.settings.recent_events,
        top_m=detector.settings.top_m,
        cache_dtype=getattr(torch, settings.cache_dtype),
    )


class InterestPipeline:
    """Validation, user state, the incremental engine and the shift detector for one worker."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        settings: Settings,
        detector: ShiftDetector | None = None,
        scorer: Scorer | None = None,
    ):
        self.settings = settings
        self.keep = checkpoint.config.receptive_field
        self.detector = detector or ShiftDetector()
        self.scorer: Scorer = scorer or serving_scorer(checkpoint, settings, self.detector)
        # only with a publish threshold: a copy of each recent user's last published distribution
        self._last_published: OrderedDict[str, np.ndarray] = OrderedDict()
        self.pseudonyms = Pseudonymiser(settings.pseudonym_key.encode())

    def swap(self, checkpoint: Checkpoint, detector: ShiftDetector) -> None:
        """Serve another checkpoint from the next batch on. Users' rows hold raw events, so each
        user's cache is rebuilt under the new model and vocabulary on their next event; their
        detector state (distributions over raw categories) carries over."""
        self.keep = checkpoint.config.receptive_field
        self.scorer.swap(checkpoint, detector.settings.recent_events, detector.settings.top_m)
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
        self.scorer.forget(user_id)
        self._last_published.pop(user_id, None)

    def dead_letter(
        self, raw: bytes, rejection: Rejection, partition: int, offset: int, event: ClickEvent | None = None
    ) -> DeadLetter:
        """The dead letter of an input message; under pseudonymisation it keeps no raw bytes and
        names the user (``event``, already pseudonymised) by pseudonym."""
        return DeadLetter.of(
            rejection.reason,
            rejection.detail,
            EVENTS.name,
            partition,
            offset,
            raw,
            None if event is None else event.user_id,
            None if event is None else event.event_id,
            copy=not self.pseudonyms.enabled,
        )

    def internal_error(self, raw: bytes, partition: int, offset: int, error: Exception) -> DeadLetter:
        """The dead letter of a message whose admission raised: a bug, kept apart from its batch.
        The exception's text may quote the input, so under pseudonymisation only its type is kept."""
        detail = type(error).__name__ if self.pseudonyms.enabled else f"{type(error).__name__}: {printable(str(error))}"
        return DeadLetter.of(
            "internal_error", detail, EVENTS.name, partition, offset, raw, copy=not self.pseudonyms.enabled
        )

    def check(self, raw: bytes, key: bytes | None, partition: int, offset: int, now_ms: int) -> ClickEvent | Refused:
        """Validate one message and its key; the event comes back pseudonymised when that is on."""
        checked = validate(raw, now_ms, self.settings.max_string_length, self.settings.max_event_bytes)
        if isinstance(checked, Rejection):
            return Refused(self.dead_letter(raw, checked, partition, offset))
        event: ClickEvent = checked
        if self.pseudonyms.enabled:
            event = ClickEvent(
                event_id=self.pseudonyms.event(event.event_id),
                user_id=self.pseudonyms.user(event.user_id),
                item_id=event.item_id,
                category_id=event.category_id,
                event_type=event.event_type,
                ts=event.ts,
            )
        if key != checked.user_id.encode():
            if self.pseudonyms.enabled:  # the key may be someone's raw id: not repeated
                found = "no message key" if key is None else "a message key other than the event's user_id"
            else:
                found = "no message key" if key is None else f"message key {printable(repr(key), 60)}"
            wrong_key = Rejection("wrong_key", f"{found}; messages must be keyed by user id")
            return Refused(self.dead_letter(raw, wrong_key, partition, offset, event))
        return event

    def accept(
        self, event: ClickEvent, raw: bytes, state: UserState, partition: int, offset: int
    ) -> Admitted | Refused | Ignored:
        """Order a checked event into its user's ``state`` (in place); say what it does."""
        stored = StoredEvent(event.event_id, event.item_id, event.category_id, event.event_type, event.ts)
        outcome = state.accept(stored, self.keep, int(self.settings.lateness_s * 1000), (partition, offset))
        if outcome in ("duplicate", "redelivered"):
            return Ignored(event.user_id, event.event_id, outcome)
        if outcome == "late":
            late = Rejection(
                "late", f"ts {event.ts} is more than {self.settings.lateness_s:g} s before {state.last_ts}"
            )
            return Refused(self.dead_letter(raw, late, partition, offset, event))
        if outcome == "conflicting_duplicate":
            conflict = Rejection(
                "conflicting_duplicate", "an event with this event_id and other content was accepted before"
            )
            return Refused(self.dead_letter(raw, conflict, partition, offset, event))
        window = UserWindow(event.user_id, tuple(state.events), state.first_position, state.before_ts)
        return Admitted(stored, window, reorder=outcome == "reordered", state=state)

    def admit(
        self, raw: bytes, key: bytes | None, partition: int, offset: int, state: UserState, now_ms: int
    ) -> Admitted | Refused | Ignored:
        """:meth:`check`, then :meth:`accept` into ``state``."""
        checked = self.check(raw, key, partition, offset, now_ms)
        return checked if isinstance(checked, Refused) else self.accept(checked, raw, state, partition, offset)

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
            self.scorer.forget(segment[0].user_id)
        interest = self.scorer.score([a.window for a in segment])
        times = self.scorer.times
        with times.stage("detector"):
            shifts = [
                self.detector.update(a.state.detector, interest.recent[row], a.event) for row, a in enumerate(segment)
            ]
        with times.stage("records"):
            entropies = interest.entropy.tolist()
            for row, admitted in enumerate(segment):
                update = self._update(
                    admitted, interest.model_version, interest.probs, row, entropies[row], interest.interest[row]
                )
                scored.updates.append(update)
                shift = shifts[row]
                if shift is not None:
                    record = self._shift(admitted, interest.model_version, shift)
                    admitted.state.shifts.append(brief(record))
                    del admitted.state.shifts[:-SHIFTS_KEPT]
                    scored.shifts.append(record)

    def _update(
        self,
        admitted: Admitted,
        model_version: str,
        batch_probs: np.ndarray,
        row: int,
        entropy: float,
        distribution: Distribution,
    ) -> InterestUpdate | None:
        """The update of row ``row`` of the batch, ``None`` when it moved no more than the publish threshold."""
        threshold = self.settings.publish_threshold
        if threshold > 0:
            probs = batch_probs[row]
            previous = self._last_published.get(admitted.user_id)
            if previous is not None and 0.5 * np.abs(probs.astype(np.float64) - previous).sum() <= threshold:
                return None
            self._last_published[admitted.user_id] = probs.copy()  # the batch's matrix may go
            self._last_published.move_to_end(admitted.user_id)
            while len(self._last_published) > self.settings.state_cache_users:
                self._last_published.popitem(last=False)  # that user's next update is published
        top = sorted(distribution.items(), key=_by_mass_then_name)[: self.settings.top_k]
        return InterestUpdate(
            user_id=admitted.user_id,
            event_id=admitted.event_id,
            ts=admitted.ts,
            model_version=model_version,
            top_categories=[CategoryProbability(c, round(p, 6)) for c, p in top],
            entropy=round(entropy, 6),
            sequence_length=admitted.position + 1,
        )

    @staticmethod
    def _shift(admitted: Admitted, model_version: str, shift: Shift) -> InterestShift:
        def moves(changes: Sequence[CategoryMove]) -> list[CategoryChange]:
            return [CategoryChange(m.category_id, round(m.before, 6), round(m.after, 6)) for m in changes]

        return InterestShift(
            shift_id=shift_id(admitted.user_id, admitted.event_id),
            user_id=admitted.user_id,
            event_id=admitted.event_id,
            ts=admitted.ts,
            model_version=model_version,
            from_categories=moves(shift.from_categories),
            to_categories=moves(shift.to_categories),
            divergence=round(shift.divergence, 6),
            statistic=round(shift.statistic, 6),
            confidence=None if shift.confidence is None else round(shift.confidence, 6),
            evidence=[ShiftEvidence(*e.event, weight=round(e.weight, 6)) for e in shift.evidence],
            sequence_length=admitted.position + 1,
        )
