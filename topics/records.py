"""The values on ShiftWatch's topics: typed, frozen records, JSON on the wire.

Records are ``msgspec`` structs: the worker builds one per output and encodes it in a few
microseconds, fields in declaration order, and a reader decodes and checks a message in one
call (:meth:`Record.loads`). Downstream teams read the JSON Schemas in ``topics/schemas/``,
generated from these classes (``shiftwatch topics schemas``) and kept in sync by a test.

>>> CategoryProbability("c1", 0.5).dumps()
b'{"category_id":"c1","probability":0.5}'
>>> CategoryProbability.loads(b'{"category_id":"c1","probability":0.5}').probability
0.5
"""

from __future__ import annotations

import base64
import hashlib
from typing import Literal, Self, get_args

import msgspec


class Record(msgspec.Struct, frozen=True):
    """A topic value: ``dumps`` to JSON bytes, ``loads`` from them (checking every field's type)."""

    def dumps(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def loads(cls, raw: bytes) -> Self:
        return msgspec.json.decode(raw, type=cls)


_ENCODER = msgspec.json.Encoder()


class ClickEvent(Record, frozen=True):
    """An accepted input event, normalised: ``event_type`` canonical, ``ts`` in epoch milliseconds."""

    event_id: str
    user_id: str
    item_id: str
    category_id: str
    event_type: str
    ts: int


class CategoryProbability(Record, frozen=True):
    category_id: str
    probability: float


class InterestUpdate(Record, frozen=True):
    """A user's interest distribution after one accepted event (its top categories)."""

    user_id: str
    event_id: str
    ts: int
    model_version: str
    top_categories: list[CategoryProbability]
    entropy: float
    sequence_length: int


class CategoryChange(Record, frozen=True):
    """A category's probability in the user's long-term profile (``before``) and recent view (``after``)."""

    category_id: str
    before: float
    after: float


class ShiftEvidence(Record, frozen=True):
    """A recent event that moved the distribution, and how much mass it added to the shift's targets."""

    event_id: str
    item_id: str
    category_id: str
    event_type: str
    ts: int
    weight: float


class InterestShift(Record, frozen=True):
    """A user's interest moved: from which categories to which, how surely, and why.

    ``shift_id`` is derived from the user and the triggering event, so a redelivered event
    republishes the same shift under the same id. ``confidence`` is the calibrated
    probability that the alarm is a real shift (null when the checkpoint has no calibration).
    """

    shift_id: str
    user_id: str
    event_id: str
    ts: int
    model_version: str
    from_categories: list[CategoryChange]
    to_categories: list[CategoryChange]
    divergence: float
    statistic: float
    confidence: float | None
    evidence: list[ShiftEvidence]
    sequence_length: int


class MarketingTrigger(Record, frozen=True):
    """A marketing action due: a rule matched a user's shift.

    ``trigger_id`` is derived from the rule and the shift, so a redelivered shift yields the
    same trigger under the same id.
    """

    trigger_id: str
    rule: str
    user_id: str
    shift_id: str
    event_id: str
    ts: int
    to_categories: list[str]
    confidence: float | None
    model_version: str


class CategoryDemand(Record, frozen=True):
    """A closed event-time window of one category's demand signal.

    ``users_in``/``users_out``: shifts into and out of the category in the window (one user
    each); ``mass_gained``/``mass_lost``: the probability mass those shifts moved;
    ``net_mass`` = gained - lost. ``window`` is ``tumbling`` or ``hopping``; ``window_start``
    and ``window_end`` (exclusive) are event time in epoch milliseconds. ``demand_id`` is
    ``<window>:<category>:<window_start>``, the same when a window is published again.
    ``model_versions``: the models whose shifts were counted (more than one across a hot-swap).
    """

    demand_id: str
    category_id: str
    window: str
    window_start: int
    window_end: int
    users_in: int
    users_out: int
    mass_gained: float
    mass_lost: float
    net_mass: float
    model_versions: list[str]


class ForgetRequest(Record, frozen=True):
    """Erase a user (``shiftwatch forget``): keyed by the raw user id, like their events."""

    user_id: str
    requested_at: int


EARLIEST_MS = 946_684_800_000
"""2000-01-01: an input event older than this is a unit or clock error."""
SECONDS_CUTOFF = 100_000_000_000
"""An input ``ts`` below this is epoch seconds, from it epoch milliseconds."""

InputRefusal = Literal[
    "not_json",
    "too_deep",
    "number_out_of_range",
    "invalid_unicode",
    "not_object",
    "missing_field",
    "wrong_type",
    "oversized",
    "unknown_event_type",
    "bad_timestamp",
    "late",
    "wrong_key",
    "conflicting_duplicate",
]
"""Why the worker refuses an input message (:mod:`stream.worker.validation` decides)."""

DEAD_LETTER_REASONS: tuple[str, ...] = (
    *get_args(InputRefusal),
    # a bug while admitting one message; a forget request naming no user; not a shift on interest.shifts
    "internal_error",
    "forget_without_key",
    "not_a_shift",
)
"""Every ``reason`` a dead letter can give."""

DEAD_LETTER_COPY_BYTES = 65_536
"""The most of a refused message a dead letter copies: a dead letter (base64, about 88 KiB at
most) always fits the producer's 1 MiB request, and every message of an accepted size
(``SHIFTWATCH_MAX_EVENT_BYTES``, at most this) is copied whole."""


class DeadLetter(Record, frozen=True):
    """An input message a service refused: why, where it came from, and its bytes.

    ``original_base64`` holds the message's first :data:`DEAD_LETTER_COPY_BYTES` bytes
    (``original_truncated`` says whether that is all of it), ``original_size`` its length and
    ``original_sha256`` its hash. Under pseudonymisation the copy and the hash are left out
    (empty and null): the bytes may carry raw ids.
    """

    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_base64: str
    original_size: int
    original_truncated: bool
    original_sha256: str | None = None
    user_id: str | None = None
    event_id: str | None = None

    @classmethod
    def of(
        cls,
        reason: str,
        detail: str,
        source_topic: str,
        partition: int,
        offset: int,
        original: bytes,
        user_id: str | None = None,
        event_id: str | None = None,
        copy: bool = True,
    ) -> DeadLetter:
        """The dead letter of a message refused for ``reason``; ``copy=False`` keeps no bytes of it."""
        kept = original[:DEAD_LETTER_COPY_BYTES] if copy else b""
        return cls(
            reason=reason,
            detail=detail,
            source_topic=source_topic,
            source_partition=partition,
            source_offset=offset,
            original_base64=base64.b64encode(kept).decode(),
            original_size=len(original),
            original_truncated=len(kept) < len(original),
            original_sha256=hashlib.sha256(original).hexdigest() if copy else None,
            user_id=user_id,
            event_id=event_id,
        )
