"""A typed client for other Python services: ShiftWatch's output topics as records.

Decoding uses the same records as the producers (:mod:`topics.records`), so a consumer and
the service cannot disagree on a field.

>>> update = decode("interest.updates", b'{"user_id": "u1", "event_id": "u1:0", "ts": 1, "model_version": "v",'
...                 b' "top_categories": [{"category_id": "c", "probability": 0.5}], "entropy": 1.0, "sequence_length": 1}')
>>> type(update).__name__, update.top_categories[0].category_id
('InterestUpdate', 'c')
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec
from aiokafka import AIOKafkaConsumer

from topics.records import Record
from topics.specs import OUTPUT_TOPICS

RECORDS: dict[str, type[Record]] = {spec.name: spec.value for spec in OUTPUT_TOPICS if spec.value is not None}


class DecodeError(ValueError):
    """A message that is not a valid record of its topic."""


def decode(topic: str, value: bytes | None) -> Record | None:
    """The record a message of an output topic carries; ``None`` for a tombstone (on
    ``interest.updates`` and ``interest.shifts``: the user, named by the key, was forgotten)."""
    record_type = RECORDS.get(topic)
    if record_type is None:
        raise DecodeError(f"{topic!r} is not a ShiftWatch output topic ({', '.join(sorted(RECORDS))})")
    if value is None:
        return None
    try:
        return record_type.loads(value)
    except msgspec.DecodeError as error:
        raise DecodeError(f"not a valid {record_type.__name__} on {topic}: {error}") from error


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: str | None
    record: Record | None  # None: a tombstone, the user named by ``key`` was forgotten


class OutputConsumer:
    """Consume output topics as typed records.

    ``async with OutputConsumer(bootstrap, ["interest.shifts"], group_id="crm") as consumer:``
    then ``async for received in consumer: ...``.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], group_id: str | None = None, from_start: bool = True):
        unknown = [t for t in topics if t not in RECORDS]
        if unknown:
            raise DecodeError(f"not ShiftWatch output topics: {', '.join(unknown)}")
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            auto_offset_reset="earliest" if from_start else "latest",
        )

    async def __aenter__(self) -> OutputConsumer:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._records()

    async def _records(self) -> AsyncIterator[Received]:
        async for message in self._consumer:
            key = message.key.decode() if message.key is not None else None
            yield Received(message.topic, message.partition, message.offset, key, decode(message.topic, message.value))
