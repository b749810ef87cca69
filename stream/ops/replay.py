"""Produce an event log into the input topic in event-time order, keyed by user id."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from model.data.loaders import EventLog
from topics.specs import EVENTS


@dataclass(frozen=True)
class Pace:
    """``rate``: events per second; ``speedup``: event time compressed X times; neither: as fast as possible."""

    rate: float | None = None
    speedup: float | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and self.speedup is not None:
            raise ValueError("give a rate or a speedup, not both")
        if (self.rate is not None and self.rate <= 0) or (self.speedup is not None and self.speedup <= 0):
            raise ValueError("rate and speedup must be positive")


def event_id(user_id: str, item_id: str, category_id: str, behaviour: str, ts_ms: int, occurrence: int = 0) -> str:
    """An id derived from the event's content (and how many identical events of the user came
    before it): replaying a log twice produces the same ids, so the repeats are suppressed as
    duplicates, while the events of two different logs never share one.

    >>> event_id("u1", "i1", "c1", "pv", 1000) == event_id("u1", "i1", "c1", "pv", 1000) != event_id("u1", "i1", "c1", "pv", 1000, 1)
    True
    """
    content = json.dumps([user_id, item_id, category_id, behaviour, ts_ms, occurrence], separators=(",", ":"))
    return hashlib.blake2b(content.encode(), digest_size=12).hexdigest()


def messages(log: EventLog) -> Iterator[tuple[int, bytes, bytes]]:
    """``(ts_ms, key, value)`` for every event, merged across users in time order.

    Logs without timestamps (S3-Rec) get each user's position as a synthetic time in seconds.
    """

    def user_stream(u: int) -> Iterator[tuple[int, int, int]]:
        user = log.users[u]
        for position in range(len(user)):
            ts = user.timestamps[position] if user.timestamps is not None else position
            yield ts * 1000, u, position

    seen: Counter[tuple[int, str, str, str, int]] = Counter()  # identical events of a user so far
    for ts_ms, u, position in heapq.merge(*(user_stream(u) for u in range(len(log.users)))):
        user = log.users[u]
        content = (u, user.items[position], user.categories[position], user.behaviors[position], ts_ms)
        occurrence = seen[content]
        seen[content] += 1
        value = {
            "event_id": event_id(user.user_id, *content[1:], occurrence),
            "user_id": user.user_id,
            "item_id": user.items[position],
            "category_id": user.categories[position],
            "event_type": user.behaviors[position],
            "ts": ts_ms,
        }
        yield ts_ms, user.user_id.encode(), json.dumps(value, separators=(",", ":")).encode()


async def replay(
    log: EventLog, bootstrap: str, pace: Pace = Pace(), topic: str = EVENTS.name, progress: bool = True
) -> int:
    """Produce every event of ``log``; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", enable_idempotence=True)
    await producer.start()
    sent = 0
    started = time.monotonic()
    first_ts: int | None = None
    try:
        with tqdm(total=log.n_events, desc=f"replay {log.name}", unit="event", disable=not progress) as bar:
            for ts_ms, key, value in messages(log):
                if pace.rate is not None:
                    due = sent / pace.rate
                elif pace.speedup is not None:
                    first_ts = ts_ms if first_ts is None else first_ts
                    due = (ts_ms - first_ts) / 1000 / pace.speedup
                else:
                    due = 0.0
                delay = started + due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(topic, value=value, key=key)
                sent += 1
                if sent % 1000 == 0:
                    bar.update(1000)
            bar.update(sent % 1000)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
