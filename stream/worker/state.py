"""A user's durable state, the value of the worker's table (its bytes: :mod:`stream.worker.rows`).

It keeps the raw fields of the user's last ``keep`` events (the model's receptive field),
so a cache can be rebuilt exactly and a new checkpoint can re-tokenise them; the total
number of accepted events (the next event's position); the input offset it has seen up
to; the shift detector's state and the last few shifts; and counters. Raw values, not token ids, so that the row
survives a vocabulary change.

>>> state = UserState.empty()
>>> state.accept(StoredEvent("e1", "i1", "c1", "view", 1_000), keep=3, source=(0, 10))
'appended'
>>> state.accept(StoredEvent("e1", "i1", "c1", "view", 1_000), keep=3, source=(0, 10))
'redelivered'
>>> state.accept(StoredEvent("e1", "i1", "c1", "view", 1_000), keep=3, source=(0, 11))
'duplicate'
>>> state.accept(StoredEvent("e1", "i7", "c1", "view", 1_000), keep=3, source=(0, 12))
'conflicting_duplicate'
>>> state.accept(StoredEvent("e2", "i2", "c1", "cart", 500), keep=3, lateness_ms=1_000, source=(0, 13))
'reordered'
>>> [e.event_id for e in state.events], state.length
(['e2', 'e1'], 2)
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict

from model.data.events import StoredEvent
from model.online.detector import DetectorState

ShiftBrief = TypedDict(
    "ShiftBrief",
    {
        "shift_id": str,
        "event_id": str,
        "ts": int,
        "sequence_length": int,
        "from": list[str],
        "to": list[str],
        "confidence": float | None,
    },
)
"""What a user's row keeps of each of their last few shifts (``/users/{id}/interests`` shows them)."""

Outcome = Literal["appended", "reordered", "duplicate", "conflicting_duplicate", "redelivered", "late"]


@dataclass
class UserState:
    events: list[StoredEvent] = field(default_factory=list)
    length: int = 0  # accepted events ever; the last kept event has position length - 1
    before_ts: int | None = None  # ts of the event just before events[0], for its time gap
    duplicates: int = 0
    late: int = 0
    reordered: int = 0
    source_partition: int = -1  # all of a user's messages come from one input partition (keyed by user)
    source_offset: int = -1  # the last input offset applied to this row
    detector: DetectorState = field(default_factory=DetectorState)  # the shift detector's state for this user
    shifts: list[ShiftBrief] = field(default_factory=list)  # the last few shifts

    @classmethod
    def empty(cls) -> UserState:
        return cls()

    def as_admitted(self) -> UserState:
        """The row as admission leaves it now, to be encoded once its batch is scored: its own
        list of kept events (the next batch's admission changes the live one), the detector
        state and shifts shared (only scoring changes them, one batch after the other, so
        between a batch's scoring and the next they hold what that batch left)."""
        return replace(self, events=list(self.events))

    @property
    def last_ts(self) -> int | None:
        """The latest timestamp accepted (events are kept in time order)."""
        return self.events[-1].ts if self.events else None

    @property
    def first_position(self) -> int:
        """Absolute position of ``events[0]``."""
        return self.length - len(self.events)

    def accept(
        self, event: StoredEvent, keep: int, lateness_ms: int = 0, source: tuple[int, int] = (-1, -1)
    ) -> Outcome:
        """Add ``event``, read from input ``source`` (partition, offset), unless it is a message
        this row has already seen (``redelivered``, as after a crash between publishing and
        committing), an event id among the kept events (``duplicate``, as a producer's retry
        sends; ``conflicting_duplicate`` when the kept event with that id differs), or too ``late``.
        Say what happened.
        """
        partition, offset = source
        if partition == self.source_partition and offset <= self.source_offset:
            return "redelivered"
        self.source_partition, self.source_offset = partition, offset
        for stored in self.events:
            if stored.event_id == event.event_id:
                self.duplicates += 1
                return "duplicate" if stored == event else "conflicting_duplicate"
        last_ts = self.last_ts
        if last_ts is not None and event.ts < last_ts - lateness_ms:
            self.late += 1
            return "late"
        outcome: Outcome = "appended"
        if last_ts is not None and event.ts < last_ts:
            times = [e.ts for e in self.events]
            self.events.insert(bisect.bisect_right(times, event.ts), event)
            self.reordered += 1
            outcome = "reordered"
        else:
            self.events.append(event)
        self.length += 1
        dropped = len(self.events) - keep
        if dropped > 0:
            self.before_ts = self.events[dropped - 1].ts
            del self.events[:dropped]
        return outcome


class StateCache:
    """Deserialised rows of the most recently seen users; the least recently used go first.

    >>> cache = StateCache(capacity=2)
    >>> cache.put(b"a", UserState.empty()); cache.put(b"b", UserState.empty())
    >>> _ = cache.get(b"a"); cache.put(b"c", UserState.empty())
    >>> [key for key in (b"a", b"b", b"c") if cache.get(key) is not None]
    [b'a', b'c']
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._states: OrderedDict[bytes, UserState] = OrderedDict()

    def get(self, key: bytes) -> UserState | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: bytes, state: UserState) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._states.pop(key, None)

    def clear(self) -> None:
        self._states.clear()
