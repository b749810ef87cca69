"""Table writes that are on Kafka before the input that caused them is acknowledged.

Faust sends a table assignment's changelog message from a buffer that may still hold it
when the input offsets are committed (its flush gives up after 0.1 s); after a crash the
table recovered from the changelog misses the write while its input is not redelivered.
ShiftWatch's agents therefore process a batch, wait until Kafka has its outputs, then write
the batch's rows with :func:`write_rows` (store and changelog, waiting for the changelog),
and only then let Faust acknowledge the batch. A crash anywhere before that redelivers the
batch, so every service must recognise work it already did (by event id, offset or output id).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import faust
import faust.streams
from faust.types import EventT, Message


class _CurrentMessage:
    """What Faust's table stores read of the current event: its message."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Message):
        self.message = message


@contextmanager
def in_partition_of(message: Message) -> Iterator[None]:
    """Within the block, a table store takes a key's partition from ``message`` (Faust reads
    it from the current event, which an agent reading in bulk has none of)."""
    current = _CurrentMessage(message)
    token = faust.streams._current_event.set(cast(Any, weakref.ref(current)))
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)


def transactional_id(app: faust.App, source_topic: str, partition: int) -> str | None:
    """Under ``processing_guarantee="exactly_once"``, the transaction of an input partition (the
    one Faust commits that partition's offsets in), else ``None``. Whatever a batch publishes
    or writes goes into the transaction of the input partition it came from."""
    if not app.in_transaction:
        return None
    return f"{app.conf.id}-{app.assignor.group_for_topic(source_topic)}-{partition}"


async def write_rows(app: faust.App, table: faust.Table, rows: Iterable[tuple[Message, Any, Any]]) -> None:
    """Write ``(message, key, value)`` rows (``None`` deletes) to the store and the changelog, in
    the partition of the input message that caused them (tables are co-partitioned with their
    input), and wait until Kafka has every changelog message."""
    await rows_written(table, await send_rows(app, table, rows))


async def send_rows(
    app: faust.App, table: faust.Table, rows: Iterable[tuple[Message, Any, Any]]
) -> list[Awaitable[Any]]:
    """:func:`write_rows` up to handing the changelog messages to the producer, which keeps their
    order within a partition; their delivery futures, for :func:`rows_written`."""
    changelog = table.changelog_topic.get_topic_name()
    serializers = app.serializers
    sent = []
    for message, key, value in rows:
        with in_partition_of(message):
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
        raw_key = serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
        raw_value = (
            None
            if value is None
            else serializers.dumps_value(table.value_type, value, serializer=table.value_serializer)
        )
        partition = message.partition
        transaction = transactional_id(app, message.topic, partition)
        sent.append(
            await app.producer.send(changelog, raw_key, raw_value, partition, None, None, transactional_id=transaction)
        )
    return sent


async def rows_written(table: faust.Table, sent: Iterable[Awaitable[Any]]) -> None:
    """Wait until Kafka has the changelog messages :func:`send_rows` sent."""
    for written in await asyncio.gather(*sent):  # where a restart with this store resumes reading the changelog
        table.data.set_persisted_offset(written.topic_partition, written.offset)


async def delete_rows(app: faust.App, table: faust.Table, rows: Iterable[tuple[int, Any]]) -> None:
    """Delete ``(partition, key)`` rows outside any event (a timer's work): from the store, and
    by a tombstone in the changelog partition, waiting until Kafka has every tombstone.

    The tombstones go outside any transaction: under exactly-once an input partition's
    transaction is committed only with new offsets of that partition, which an idle partition
    may not get before the broker aborts the transaction; a deletion repeated after a crash
    changes nothing."""
    changelog = table.changelog_topic.get_topic_name()
    sent = []
    for partition, key in rows:
        table.data.pop(key, None)
        raw_key = app.serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
        sent.append(await app.producer.send(changelog, raw_key, None, partition, None, None))
    for written in await asyncio.gather(*sent):
        table.data.set_persisted_offset(written.topic_partition, written.offset)


ROLL_KEY = b"\x00shiftwatch-segment-roll"
"""The key of the tombstones :func:`roll_compacted_segments` writes: no user's."""


def schedule_segment_rolls(
    app: faust.App, table: faust.Table, source_topic: str, erasure_deadline_s: float, *also: str
) -> None:
    """Every eighth of the erasure deadline, a tombstone of :data:`ROLL_KEY` on each partition of
    ``table``'s changelog (and of the compacted topics ``also``) that this process writes, the
    partitions of ``source_topic`` it is assigned.

    Kafka never compacts a partition's active segment and rolls it only on an append, so on a
    partition that goes quiet a forgotten user's last row and its tombstone would stay until the
    next write; these appends roll it (``segment.ms`` is a quarter of the deadline)."""

    @app.timer(interval=erasure_deadline_s / 8)
    async def roll_compacted_segments() -> None:
        partitions = sorted({tp.partition for tp in app.assignor.assigned_actives() if tp.topic == source_topic})
        sent = [await app.producer.send(topic, ROLL_KEY, None, p, None, None) for topic in also for p in partitions]
        await delete_rows(app, table, [(p, ROLL_KEY) for p in partitions])
        await asyncio.gather(*sent)


class PendingRows:
    """The rows a batch changed: read back while the batch runs, written at its end."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, Any], tuple[faust.Table, EventT, Any]] = {}

    def get(self, table: faust.Table, event: EventT, key: Any) -> Any:
        pending = self._rows.get((table.name, key))
        if pending is not None:
            return pending[2]
        with in_partition_of(event.message):
            return table.get(key)

    def set(self, table: faust.Table, event: EventT, key: Any, value: Any) -> None:
        """``value=None`` deletes the row."""
        self._rows[(table.name, key)] = (table, event, value)

    async def write(self, app: faust.App) -> None:
        by_table: dict[str, list[tuple[Message, Any, Any]]] = {}
        tables = {}
        for (name, key), (table, event, value) in self._rows.items():
            tables[name] = table
            by_table.setdefault(name, []).append((event.message, key, value))
        await asyncio.gather(*(write_rows(app, tables[name], rows) for name, rows in by_table.items()))
        self._rows.clear()
