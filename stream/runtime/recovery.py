"""The overrides of Faust (faust-streaming 0.15.3): four so that a start, restart or rebalance
loses no input and repeats no committed output, and two for speed.

We measured about half of the restarts under load losing messages, some 20 per partition
(never processed, while later offsets were processed and committed; in the spirit of
faust-streaming/faust#596). Two races cause it:

1. At the end of recovery Faust resumes the input partitions, seeks them to the committed
   offsets, and only then resumes flow control, which clears the in-memory stream queues.
   Messages fetched in between are put in a queue that is then emptied, while the read
   offset has moved past them. :class:`QueueSafeRecovery` resumes the input partitions only
   after flow control has resumed.
2. The fetcher hands the *live* set of active partitions to the consumer thread. When it
   empties in the meantime (the changelogs are paused at the end of recovery, the inputs not
   yet resumed), aiokafka returns records of every partition, advancing their positions, and
   Faust then drops the ones of inactive partitions. :class:`SafeConsumer` fetches with a
   copy taken when the fetch is decided.

And one race repeats output under ``processing_guarantee="exactly_once"``:

3. Faust commits on a timer, so a commit may land in the middle of an agent's batch: the
   transaction it commits holds the outputs the batch has sent so far but not the batch's
   offsets (acknowledged at its end). After a crash the batch is read again and its outputs
   committed twice. :class:`SafeConsumer` commits only between batches: an agent holds
   ``consumer.between_batches`` for each batch.

And one race leaves a topic unread for minutes:

4. Faust creates its internal topics (``shiftwatch demand``'s category moves, changelogs) and
   subscribes at once. If the broker's metadata does not list a topic yet when aiokafka
   fetches it for the subscription, the group is assigned none of its partitions, and aiokafka
   looks again only after ``consumer_metadata_max_age_ms`` (5 minutes). The consumer of
   :class:`SafeConsumer` waits until the metadata lists every subscribed topic (at most
   :data:`TOPIC_WAIT_S`) before it subscribes.

And two overrides for speed, with no race of their own to fix:

5. Faust hands each fetched message to its stream alone (:mod:`stream.runtime.bulk` says what
   that costs). :meth:`SafeConsumer._drain_messages` gives the messages of topics routed in
   bulk to their channel as one list per fetch; the offset and gap bookkeeping stays Faust's.
6. At a log level of WARN or above, ``faust.Worker`` sets the root logger to DEBUG, so that its
   terminal spinner ticks on every record: every debug call of aiokafka, mode and Faust (one
   per message produced, one per fetch request) then builds a log record, about 4% of the
   event loop's and of the consumer thread's time at 1,000 events/s (``py-spy --gil``).
   :class:`QuietWorker` has no spinner, so the root logger keeps the level asked for.

``tests/stream/worker/test_worker.py`` restarts a worker mid-stream (killed and stopped) and checks
that every event gets its update; ``tests/stream/worker/test_faults.py`` that under exactly-once a
killed worker's updates are committed once each; ``tests/stream/runtime/test_recovery.py`` that a
subscription waits for a topic created after it was asked for, and that the root logger of a
:class:`QuietWorker` keeps its level. Every worker test reads its input through the bulk path;
the first of ``test_worker.py`` checks that every input message is counted and every offset
committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import faust
from aiokafka import AIOKafkaClient
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import CONSUMER_FETCHING, RecordMap
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP, ChannelT, Message
from mode import Service, ServiceT

from stream.runtime.bulk import bulk_routes

TOPIC_WAIT_S = 15.0  # a topic the metadata lacks for longer than this is missing, not late


class QueueSafeRecovery(Recovery):
    """:class:`faust.tables.recovery.Recovery` that resumes stream partitions last."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        with _resume_partitions_after_flow(self.app):
            await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        with _resume_partitions_after_flow(self.app):
            await super()._resume_streams(generation_id)


class QueueSafeTableManager(TableManager):
    """The app's ``TableManager`` setting: Faust's, with :class:`QueueSafeRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = QueueSafeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class SafeConsumer(Consumer):
    """Faust's aiokafka consumer, fetching only the partitions active when the fetch began and
    committing only while no agent holds :attr:`between_batches`.

    ``Stream.take_events`` acknowledges a batch's events when the agent asks for the next
    batch, before the event loop runs another task, so a commit that waited for the lock
    finds the whole batch acknowledged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.between_batches = asyncio.Lock()

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return TopicWaitingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        async with self.between_batches:
            return await super().commit(topics, start_new_transaction=start_new_transaction)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        snapshot = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(snapshot, timeout)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``, faust-streaming 0.15.3) with one
        change: the messages of topics routed in bulk (:mod:`stream.runtime.bulk`) go to their
        channel as one list per fetch instead of one by one through the conductor; the
        read-offset and gap bookkeeping is Faust's, message by message, and the count-based
        commit (``broker_commit_every``) is looked at once per fetch."""
        callback, getmany = self.callback, self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        routes = bulk_routes(self.app)
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched: dict[ChannelT, list[Message]] = {}
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in getmany(timeout=1.0):
                        offset = message.offset
                        read = read_offsets[tp]
                        if read is not None and offset < read:
                            continue  # Faust drops these too
                        if read and offset - read > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, read + 1, offset)
                        channel = routes.get(message.topic)
                        if channel is None:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            fetched.setdefault(channel, []).append(message)
                        read_offsets[tp] = offset
                    for channel, messages in fetched.items():
                        await self.wait_first(channel.put(cast(Any, messages)), self.suspend_flow.wait())
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class QuietWorker(faust.Worker):
    """:class:`faust.Worker` without the terminal spinner, which lowers the root logger to DEBUG."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


class TopicWaitingConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, subscribing once the cluster's metadata lists the topics."""

    async def subscribe(self, topics: Iterable[str]) -> None:
        topics = set(topics)
        missing = await self.call_thread(unknown_topics_after, self._ensure_consumer()._client, topics, TOPIC_WAIT_S)
        if missing:
            self.log.warning(
                "Subscribing to topics the cluster does not list after %.0f s (ShiftWatch's come from `shiftwatch topics create`): %s",
                TOPIC_WAIT_S,
                ", ".join(sorted(missing)),
            )
        await super().subscribe(topics)


async def unknown_topics_after(
    client: AIOKafkaClient, topics: set[str], timeout_s: float, poll_s: float = 0.1
) -> set[str]:
    """Which of ``topics`` the cluster's metadata still does not list after waiting up to
    ``timeout_s`` for them (none, as soon as it lists them all)."""
    deadline = time.monotonic() + timeout_s
    while True:
        cluster = await client.fetch_all_metadata()
        missing = {topic for topic in topics if not cluster.partitions_for_topic(topic)}
        if not missing or time.monotonic() >= deadline:
            return missing
        await asyncio.sleep(poll_s)


@contextmanager
def _resume_partitions_after_flow(app: Any) -> Iterator[None]:
    """Within the block, ``consumer.resume_partitions`` only notes its partitions, and
    ``flow_control.resume`` (which clears the stream queues) resumes them afterwards."""
    consumer, flow_control = app.consumer, app.flow_control
    held: set[TP] = set()
    resume_partitions, resume_flow = consumer.resume_partitions, flow_control.resume

    def hold(partitions: Iterable[TP]) -> None:
        held.update(partitions)

    def resume_flow_then_partitions() -> None:
        resume_flow()
        resume_partitions(set(held))
        held.clear()

    consumer.resume_partitions, flow_control.resume = hold, resume_flow_then_partitions
    try:
        yield
    finally:
        del consumer.resume_partitions, flow_control.resume
        if held:  # Faust returned early (a new rebalance began): resume as it would have
            resume_partitions(held)


def between_batches(app: faust.App) -> asyncio.Lock:
    """The lock an agent holds for each batch, during which the app's :class:`SafeConsumer`
    commits nothing; timers that rewrite rows hold it too."""
    consumer = app.consumer
    if not isinstance(consumer, SafeConsumer):
        raise TypeError(f"{app.conf.id} consumes with {type(consumer).__name__}, not SafeConsumer (stream.runtime.app)")
    return consumer.between_batches


def recovered(app: faust.App) -> bool:
    """Whether the app's tables are recovered from their changelogs (``/readyz``)."""
    tables = app.tables
    if not isinstance(tables, QueueSafeTableManager):
        raise TypeError(f"{app.conf.id} manages its tables with {type(tables).__name__}, not QueueSafeTableManager")
    return tables.recovery.completed.is_set()
