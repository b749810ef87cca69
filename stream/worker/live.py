"""The live view of a worker's shifts: the latest ones, and a feed for each subscriber.

Each shift is kept with the time the worker published it, so a page that loads later
shows when each one happened, not when the page saw it.

>>> import asyncio
>>> from topics.records import InterestShift
>>> def shift(i: str) -> InterestShift:
...     return InterestShift(i, "u", "e" + i, 0, "v", [], [], 0.5, 1.0, None, [], 1)
>>> async def demo():
...     feed = ShiftFeed(keep=2)
...     queue = feed.subscribe()
...     feed.publish([shift("a"), shift("b"), shift("c")], published=12.5)
...     return [(p.shift.shift_id, p.published) for p in feed.recent(5)], queue.qsize()
>>> asyncio.run(demo())
([('c', 12.5), ('b', 12.5)], 3)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from topics.records import InterestShift


@dataclass(frozen=True, slots=True)
class Published:
    """A shift and when the worker published it (epoch seconds, once Kafka had it)."""

    shift: InterestShift
    published: float

    def to_json(self) -> dict[str, object]:
        """The shift's fields and ``published_at`` (epoch milliseconds)."""
        return {**msgspec.to_builtins(self.shift), "published_at": int(self.published * 1000)}


class ShiftFeed:
    """Keeps the last ``keep`` shifts; hands each new one to every subscriber's queue.

    A subscriber that falls ``backlog`` shifts behind loses the oldest: a slow browser must
    not hold the worker's memory.
    """

    def __init__(self, keep: int = 200, backlog: int = 1000):
        self._recent: deque[Published] = deque(maxlen=keep)
        self._subscribers: set[asyncio.Queue[Published]] = set()
        self.keep = keep
        self.backlog = backlog

    def publish(self, shifts: Sequence[InterestShift], published: float) -> None:
        entries = [Published(shift, published) for shift in shifts]
        self._recent.extend(entries)
        for queue in self._subscribers:
            for entry in entries:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(entry)

    def forget(self, user_id: str) -> None:
        """Drop a user's shifts from the recent ones (subscribers already have theirs)."""
        kept = [entry for entry in self._recent if entry.shift.user_id != user_id]
        self._recent.clear()
        self._recent.extend(kept)

    def recent(self, limit: int) -> list[Published]:
        """Newest first."""
        return list(reversed(self._recent))[: max(0, limit)]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[Published]:
        queue: asyncio.Queue[Published] = asyncio.Queue(maxsize=self.backlog)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Published]) -> None:
        self._subscribers.discard(queue)
