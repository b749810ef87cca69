"""A user's durable state, the value of the worker's table: small, JSON, rebuildable-from.

It keeps the raw fields of the user's last ``keep`` events (the model's receptive field),
so a cache can be rebuilt exactly and a new checkpoint can re-tokenise them; the total
number of accepted events (the next event's position); and counters. Raw values, not
token ids, so that the row survives a vocabulary change.

>>> state = UserState.empty()
>>> state.accept(StoredEvent("e1", "i1", "c1", "view", 1_000, 0, 10), keep=3)
'appended'
>>> state.accept(StoredEvent("e1", "i1", "c1", "view", 1_000, 0, 11), keep=3)
'duplicate'
>>> state.accept(StoredEvent("e2", "i2", "c1", "cart", 500, 0, 12), keep=3, lateness_ms=1_000)
'reordered'
>>> [e.event_id for e in state.events], state.length
(['e2', 'e1'], 2)
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Outcome = Literal["appended", "reordered", "duplicate", "redelivered", "late"]


class StoredEvent(NamedTuple):
    """An accepted event, as kept in the table, with the input offset it came from.

    A named tuple, so that a row serialises to compact JSON arrays at C speed.
    """

    event_id: str
    item_id: str
    category_id: str
    event_type: str
    ts: int
    partition: int
    offset: int


@dataclass
class UserState:
    events: list[StoredEvent] = field(default_factory=list)
    length: int = 0  # accepted events ever; the last kept event has position length - 1
    last_ts: int | None = None
    before_ts: int | None = None  # ts of the event just before events[0], for its time gap
    duplicates: int = 0
    late: int = 0
    reordered: int = 0

    @classmethod
    def empty(cls) -> UserState:
        return cls()

    @property
    def first_position(self) -> int:
        """Absolute position of ``events[0]``."""
        return self.length - len(self.events)

    def accept(self, event: StoredEvent, keep: int, lateness_ms: int = 0) -> Outcome:
        """Add ``event`` unless it is a duplicate or too late; say what happened.

        ``redelivered``: the same message (same partition and offset) seen again, as after
        a crash between the table write and the commit; the state is unchanged, and the
        caller should re-publish its update. ``duplicate``: the same event id from another
        message; nothing is published.
        """
        for stored in self.events:
            if stored.event_id == event.event_id:
                if (stored.partition, stored.offset) == (event.partition, event.offset):
                    return "redelivered"
                self.duplicates += 1
                return "duplicate"
        if self.last_ts is not None and event.ts < self.last_ts - lateness_ms:
            self.late += 1
            return "late"
        outcome: Outcome = "appended"
        if self.last_ts is not None and event.ts < self.last_ts:
            times = [e.ts for e in self.events]
            self.events.insert(bisect.bisect_right(times, event.ts), event)
            self.reordered += 1
            outcome = "reordered"
        else:
            self.events.append(event)
            self.last_ts = event.ts
        self.length += 1
        dropped = len(self.events) - keep
        if dropped > 0:
            self.before_ts = self.events[dropped - 1].ts
            del self.events[:dropped]
        return outcome

    def to_json(self) -> bytes:
        """Compact JSON: events as arrays in :class:`StoredEvent` field order."""
        row = {name: getattr(self, name) for name in _COUNTERS}
        row["events"] = self.events
        return json.dumps(row, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UserState:
        row = json.loads(raw)
        return cls(events=[StoredEvent._make(e) for e in row.pop("events")], **row)


_COUNTERS = ("length", "last_ts", "before_ts", "duplicates", "late", "reordered")
