"""The live view of a worker's shifts: the latest ones, and a feed for each subscriber.

>>> import asyncio
>>> async def demo():
...     feed = ShiftFeed(keep=2)
...     queue = feed.subscribe()
...     feed.publish([{"shift_id": "a"}, {"shift_id": "b"}, {"shift_id": "c"}])
...     return [s["shift_id"] for s in feed.recent(5)], queue.qsize()
>>> asyncio.run(demo())
(['c', 'b'], 3)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

Record = dict[str, object]


class ShiftFeed:
    """Keeps the last ``keep`` shifts; hands each new one to every subscriber's queue.

    A subscriber that falls ``backlog`` shifts behind loses the oldest: a slow browser must
    not hold the worker's memory.
    """

    def __init__(self, keep: int = 200, backlog: int = 1000):
        self._recent: deque[Record] = deque(maxlen=keep)
        self._subscribers: set[asyncio.Queue[Record]] = set()
        self.keep = keep
        self.backlog = backlog

    def publish(self, shifts: Sequence[Record]) -> None:
        self._recent.extend(shifts)
        for queue in self._subscribers:
            for shift in shifts:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(shift)

    def forget(self, user_id: str) -> None:
        """Drop a user's shifts from the recent ones (subscribers already have theirs)."""
        kept = [shift for shift in self._recent if shift.get("user_id") != user_id]
        self._recent.clear()
        self._recent.extend(kept)

    def recent(self, limit: int) -> list[Record]:
        """Newest first."""
        return list(reversed(self._recent))[: max(0, limit)]

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[Record]:
        queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=self.backlog)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Record]) -> None:
        self._subscribers.discard(queue)
