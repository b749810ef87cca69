"""The stream worker: input topic -> user table -> incremental engine -> interest updates and shifts.

:class:`Worker` is thin glue around :class:`stream.worker.pipeline.InterestPipeline`. Its
agent takes the input a fetch at a time (:mod:`stream.runtime.bulk`: whatever the consumer
has fetched, up to ``batch_size`` messages, with no per-message Faust stream), admits every
message into its user's state (in memory, on the event loop) and hands the rest of the batch
to the flight (:mod:`stream.runtime.inflight`, up to ``batches_in_flight`` batches at once):
the scoring thread scores the admitted events with one engine step and their users' shift
detectors, one batch after the other, and encodes the changed rows; then, once the batch
before has published, the batch publishes its updates, shifts and dead letters and waits until
Kafka has them; once the batch before has done as much and handed its rows to the producer, it
writes each changed user's table row (the detector's state included) and waits for its
changelog message; only then are its offsets acknowledged. So the agent admits batch N+1
while batch N waits on Kafka (by default once batch N is scored and has published:
``batches_waiting_to_score``, so that under load what arrives meanwhile makes one larger
batch instead of a queue of small ones, each with the scoring's fixed cost). And a committed
offset never runs ahead of the changelog: after a crash, an event is either in the recovered
row (its update and shift were published, and those of every earlier event of the user; its
redelivery is recognised by offset) or it is redelivered and processed as new. A row that a
batch in flight has changed and not yet written is read from memory (``Worker.unwritten``),
never from the table. A failed batch fails those after it; they are done again from the
table's rows (:class:`stream.worker.guard.BatchGuard`).

The same agent reads ``privacy.forget-requests`` (co-partitioned: keyed by user), so an
erasure is ordered with the user's events; it begins once no batch is in flight. So do the
timers that swap in a new model version (:mod:`stream.worker.hotswap`) or evict users past the
state TTL. Under ``processing_guarantee="exactly_once"`` every output and row goes into the
Kafka transaction of the input partition it came from
(:func:`stream.runtime.durable.transactional_id`), and Faust commits those transactions only
between batches, so one batch is in flight at a time.

Messages go straight to the producer, not through Faust's ``topic.send`` or table assignment:
inside an agent ``topic.send`` attaches the message to the offset and publishes it at the
next commit (seconds of latency), and rows are written by :func:`stream.runtime.durable.send_rows`
and awaited by :func:`~stream.runtime.durable.rows_written` (a table assignment's changelog
message may still sit in Faust's buffer when the offsets are committed).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import shutil
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import Message

from model.data.vocab import OOV_ID
from model.net.checkpoint import load_checkpoint
from model.online.detector import load_detector
from stream.runtime.app import new_app, new_user_table
from stream.runtime.bulk import acknowledge, bulk_channel, fetched_batches, route_in_bulk
from stream.runtime.durable import (
    delete_rows,
    in_partition_of,
    rows_written,
    schedule_segment_rolls,
    send_rows,
    transactional_id,
)
from stream.runtime.inflight import FlightFailed, InFlight, Turn
from stream.runtime.recovery import between_batches
from stream.settings import Settings
from stream.worker.guard import BatchGuard
from stream.worker.hotswap import CheckpointWatcher, Loaded
from stream.worker.live import ShiftFeed
from stream.worker.metrics import WorkerMetrics
from stream.worker.pipeline import Admitted, Ignored, InterestPipeline, Refused, Scored, serving_scorer
from stream.worker.rows import decode_row, encode_row
from stream.worker.state import StateCache, UserState
from stream.worker.ttl import ActivityIndex
from stream.worker.tuning import tune_for_scoring
from stream.worker.views import add_views
from topics.records import DeadLetter
from topics.specs import EVENTS, FORGET, INVALID, SHIFTS, UPDATES

log = logging.getLogger(__name__)

FLOW_CATEGORIES = 20  # categories with their own label value in shiftwatch_shift_flows_total
TABLE_COUNT_S = 30.0  # how often the table's rows are counted for shiftwatch_table_rows (a full key scan)

Outcome = Admitted | Refused | Ignored


@dataclass(frozen=True, slots=True)
class Scoring:
    """What the scoring thread hands back for a batch: its updates and shifts, the time they took
    (in all, and by stage), and its changed rows encoded (in the order of the rows it was given)."""

    scored: Scored
    seconds: float
    stages: dict[str, float]
    encoded: list[bytes]


class Interrupted(Exception):
    """A batch was not all begun: ``remaining`` was not, because a batch in flight failed or
    beginning it raised ``error``."""

    def __init__(self, remaining: Sequence[Message], error: Exception | None = None):
        super().__init__(f"{len(remaining)} messages not begun")
        self.remaining, self.error = remaining, error


def create_app(settings: Settings) -> faust.App:
    """The worker's Faust app: what ``shiftwatch worker`` runs."""
    return Worker(settings).app


class Worker:
    """One worker process: its Faust app, user table, pipeline, metrics and live feed."""

    def __init__(self, settings: Settings):
        self.settings = settings
        checkpoint = load_checkpoint(settings.checkpoint)
        detector = load_detector(settings.checkpoint, checkpoint.model_version)
        tune_for_scoring(settings.compute_threads)
        scorer = serving_scorer(checkpoint, settings, detector)
        self.pipeline = InterestPipeline(checkpoint, settings, detector, scorer)
        self.serving = Loaded(checkpoint, detector)  # what the views and shiftwatch_model_info describe
        for warning in self.serving.warnings:
            log.warning("Serving %s: %s", settings.checkpoint, warning)
        if settings.processing_guarantee == "exactly_once":
            # The local store may hold writes of transactions a crash aborted; rebuild it from the
            # changelog, which a transactional reader sees without them.
            shutil.rmtree(settings.data_dir, ignore_errors=True)
        self.app, registry = new_app(
            settings,
            settings.app_id,
            settings.data_dir,
            stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
            table_cleanup_interval=3600,
            processing_guarantee=settings.processing_guarantee,
        )
        self.processed: dict[tuple[str, int], int] = {}  # the last input offset processed, by partition
        self._rows_counted = (0, float("-inf"))  # (rows, when)
        self.feed = ShiftFeed()
        top_categories = checkpoint.tokenizer.categories.tokens[OOV_ID + 1 : OOV_ID + 1 + FLOW_CATEGORIES]
        self.metrics = WorkerMetrics(
            registry, scorer.engine, self.serving.info, self.lags, self.table_rows, top_categories
        )
        # Raw bytes in: the pipeline parses and validates them, and dead-letters them verbatim.
        # Forget requests share the agent (and its partitions: both keyed by user), so an erasure
        # is ordered with the user's events and no batch in flight writes the row back.
        self.input = self.app.topic(
            EVENTS.name,
            FORGET.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        self.fetched = bulk_channel(self.app)  # the input, a fetch at a time (stream/runtime/bulk.py)
        route_in_bulk(self.app, self.fetched, [self.input])
        self.users = new_user_table(self.app, "users", settings, "user state rows (stream/worker/rows.py)")
        # The table stays the truth; any rebalance may move users away and back, so the cache of
        # deserialised rows is dropped on every one.
        self.states = StateCache(settings.state_cache_users)
        self.activity = ActivityIndex() if settings.state_ttl_s > 0 else None
        self.watcher = CheckpointWatcher(settings.checkpoint, self.serving.info["model_version"])
        # Under exactly-once a retry would put the batch's outputs twice into the open transaction;
        # stopping at once lets the broker abort it.
        self.guard = BatchGuard(attempts=1 if settings.processing_guarantee == "exactly_once" else 3)
        # Under exactly-once Faust commits a partition's transaction, outputs and offsets together,
        # only between batches: one batch in flight.
        depth = 1 if settings.processing_guarantee == "exactly_once" else settings.batches_in_flight
        self.flight = InFlight(depth, on_failure=self._recover_soon)
        self._recovering: set[asyncio.Task[None]] = set()  # held, so that they are not collected mid-run
        # One thread scores the batches, one after the other, in the order they were admitted.
        self.scoring = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shiftwatch-scoring")
        self.unwritten: dict[bytes, tuple[UserState, int]] = {}  # rows batches in flight changed: state, batch
        self._batches_started = 0
        self._scorings: list[concurrent.futures.Future[Scoring]] = []  # submitted, maybe not done
        self._register()
        add_views(self.app, self.users, lambda: self.serving, self.feed, registry, self.pipeline.pseudonyms, settings)

    def _register(self) -> None:
        """The agent, timers and rebalance hook, on the app."""
        app, settings = self.app, self.settings

        @app.on_partitions_revoked.connect
        async def forget_states(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.states.clear()
            if self.activity is not None:
                self.activity.clear()

        @app.agent(self.fetched)
        async def interest(stream: faust.StreamT) -> None:
            async for batch in fetched_batches(app, stream, settings.batch_size):
                for topic, count in collections.Counter(m.topic for m in batch).items():
                    self.metrics.input_messages.labels(topic).inc(count)
                async with between_batches(app):  # no commit while a batch starts (stream/runtime/recovery.py)
                    await self.run(batch)

        if settings.checkpoint_poll_s > 0:
            app.timer(interval=settings.checkpoint_poll_s, name="look_for_a_new_model")(self.look_for_a_new_model)
        if self.activity is not None:
            app.timer(interval=settings.state_sweep_s, name="expire_inactive_users")(self.expire_inactive_users)
        schedule_segment_rolls(app, self.users, EVENTS.name, settings.erasure_deadline_s, UPDATES.name)

    # -- what the metrics read --------------------------------------------------------

    def lags(self) -> dict[tuple[str, int], int]:
        """Messages behind each assigned partition's end, once this worker has processed one of it."""
        out = {}
        for tp in self.app.consumer.assignment():
            last = self.processed.get((tp.topic, tp.partition))
            end = self.app.consumer.highwater(tp) if last is not None else None
            if last is not None and end is not None:
                out[(tp.topic, tp.partition)] = max(0, end - last - 1)
        return out

    def table_rows(self) -> int:
        """Rows in this worker's table store, counted at most every :data:`TABLE_COUNT_S`."""
        rows, at = self._rows_counted
        if time.monotonic() - at >= TABLE_COUNT_S:
            self._rows_counted = rows, at = len(self.users.data), time.monotonic()
        return rows

    # -- a batch ----------------------------------------------------------------------

    async def run(self, batch: Sequence[Message]) -> None:
        """Begin the batch, wait for room in the flight and for the scoring thread to catch up,
        and do again what failed."""
        try:
            await self.begin(batch)
        except FlightFailed as failure:
            await self.retry(failure)
        await self.flight.room()
        await self._scoring_caught_up()
        await self.recover()

    async def begin(self, batch: Sequence[Message]) -> None:
        """Begin every message of the batch (erasures once nothing is in flight); raise
        :class:`FlightFailed` with what is to be done again once something failed."""
        rest = batch
        while rest:
            try:
                self.handle(rest)
                return
            except Interrupted as stop:
                rest = stop.remaining
                if stop.error is not None:
                    await self.settle(rest, stop.error)
            await self.flight.drained()
            if self.flight.failed:
                await self.settle(rest)

    def handle(self, batch: Sequence[Message]) -> None:
        """Begin a batch in the order it came, forget requests between the events around them.
        An erasure begins only with no batch in flight (none may be scoring the user it forgets):
        the rest comes back as :class:`Interrupted`, as it does when beginning raised."""
        start = 0
        try:
            for i, message in enumerate(batch):
                if message.topic == FORGET.name:
                    if start < i:
                        self.process(batch[start:i])
                        start = i
                    if self.flight.running:
                        raise Interrupted(batch[i:])
                    self.erase(message)
                    start = i + 1
            if start < len(batch):
                self.process(batch[start:])
        except Interrupted:
            raise
        except Exception as error:  # done again like a failed batch in flight
            raise Interrupted(batch[start:], error) from error

    async def settle(self, rest: Sequence[Message] = (), error: Exception | None = None) -> None:
        """Wait for every batch in flight; raise :class:`FlightFailed` with the failed ones' messages
        and ``rest`` (not begun) when one failed or ``error`` is given."""
        try:
            await self.flight.settle()
        except FlightFailed as failed:
            raise FlightFailed([*failed.items, *rest], failed.error) from None
        if error is not None:
            raise FlightFailed(rest, error)

    async def retry(self, failure: FlightFailed) -> None:
        """Drop what this process holds about the users of the failed messages and do them
        again, as many times as the guard allows (stream/worker/guard.py)."""
        pending = failure.items

        async def again() -> None:
            nonlocal pending
            try:
                await self.begin(pending)
                await self.settle()
            except FlightFailed as failed:
                pending = failed.items
                raise failed.error from None

        await self.guard.run(again, reset=lambda: self._reset(pending), failure=failure.error)

    def _recover_soon(self) -> None:
        task = asyncio.ensure_future(self.recover_soon())
        self._recovering.add(task)
        task.add_done_callback(self._recovering.discard)

    async def recover_soon(self) -> None:
        """A batch failed while the agent may be waiting for input: do it again without waiting."""
        async with between_batches(self.app):
            await self.recover()

    async def recover(self) -> None:
        """Once a batch in flight has failed: wait for the others, then do again the failed ones."""
        if self.flight.failed:
            try:
                await self.settle()
            except FlightFailed as failure:
                await self.retry(failure)

    def process(self, batch: Sequence[Message]) -> None:
        """Admit the messages (here, on the event loop) and start the rest as a batch in flight:
        scoring on the scoring thread, then :meth:`complete`."""
        now_ms = int(time.time() * 1000)
        metrics = self.metrics
        admitted: list[Admitted] = []
        ingested: list[float] = []  # each admitted event's arrival in Kafka (record timestamp, seconds)
        letters: list[DeadLetter] = []
        changed: dict[bytes, tuple[Message, UserState]] = {}
        outcomes: collections.Counter[str] = collections.Counter()
        for message in batch:
            try:
                row, outcome = self._admit(message, now_ms)
            except Exception as error:  # noqa: BLE001 - a bug on one message must not cost the batch
                log.error(
                    "Admitting %s[%d]@%d raised %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    type(error).__name__,
                )
                letter = self.pipeline.internal_error(message.value or b"", message.partition, message.offset, error)
                row, outcome = None, Refused(letter)
            self.processed[(message.topic, message.partition)] = message.offset
            if isinstance(outcome, Refused):
                reason = outcome.dead_letter.reason
                letters.append(outcome.dead_letter)
                outcomes["late" if reason == "late" else "invalid"] += 1
                metrics.dead_letters.labels(reason).inc()
            elif isinstance(outcome, Ignored):
                outcomes[outcome.why] += 1
            else:
                outcomes["accepted"] += 1
                admitted.append(outcome)
                ingested.append(message.timestamp)
            if row is not None:
                changed[row[0]] = (message, row[1])
        for outcome_name, count in outcomes.items():
            metrics.events.labels(outcome_name).inc(count)
        number = self._next_batch()
        rows = []
        for key, (message, state) in changed.items():
            rows.append((message, key, state.as_admitted()))
            self.unwritten[key] = (state, number)
        scoring = self.scoring.submit(self._score, admitted, rows)
        self._scorings.append(scoring)
        self.flight.start(
            batch,
            functools.partial(
                self.complete,
                scoring=scoring,
                admitted=admitted,
                letters=letters,
                batch=batch,
                rows=rows,
                number=number,
                ingested=ingested,
            ),
        )

    async def _scoring_caught_up(self) -> None:
        """Wait until at most ``batches_waiting_to_score`` batches wait for the scoring thread:
        the messages fetched meanwhile make the next batch, so under load batches grow instead
        of queueing, each with the scoring's fixed cost."""
        self._scorings = [f for f in self._scorings if not f.done()]
        while len(self._scorings) > self.settings.batches_waiting_to_score:
            await asyncio.wait([asyncio.wrap_future(self._scorings[0])])
            self._scorings = [f for f in self._scorings if not f.done()]
        if not self._scorings:  # the batch before is scored: it publishes before the next is admitted
            await self.flight.published()

    def _score(self, admitted: Sequence[Admitted], rows: Sequence[tuple[Message, bytes, UserState]]) -> Scoring:
        """On the scoring thread, one batch after the other: the batch's updates and shifts, and
        its rows encoded before the next batch's scoring changes their detector states."""
        started = time.perf_counter()
        scored = self.pipeline.score(admitted) if admitted else Scored([], [])
        seconds = time.perf_counter() - started
        stages = self.pipeline.scorer.times.reset()
        return Scoring(scored, seconds, stages, [encode_row(state) for _, _, state in rows])

    async def complete(
        self,
        turn: Turn,
        scoring: concurrent.futures.Future[Scoring],
        admitted: Sequence[Admitted],
        letters: Sequence[DeadLetter],
        batch: Sequence[Message],
        rows: Sequence[tuple[Message, bytes, UserState]],
        number: int,
        ingested: Sequence[float],
    ) -> None:
        """The rest of a batch in flight: publish its updates and shifts once the batch before has
        published, wait until Kafka has them, write its rows once the batch before has written
        its own, wait for their changelog messages, and only then acknowledge its offsets."""
        done = await asyncio.wrap_future(scoring)
        metrics = self.metrics
        shifts = done.scored.shifts
        if admitted:
            metrics.model_step.observe(done.seconds)
            metrics.batch_size.observe(len(admitted))
            for stage, seconds in done.stages.items():
                metrics.scoring_seconds.labels(stage).inc(seconds)
        await turn.publishing()
        source = {a.user_id: a.state.source_partition for a in admitted}
        deliveries = [
            await self.send(INVALID.name, letter.user_id, letter.dumps(), letter.source_partition) for letter in letters
        ]
        for update in done.scored.updates:
            if update is not None:
                deliveries.append(await self.send(UPDATES.name, update.user_id, update.dumps(), source[update.user_id]))
                metrics.updates.inc()
        for shift in shifts:
            deliveries.append(await self.send(SHIFTS.name, shift.user_id, shift.dumps(), source[shift.user_id]))
            metrics.count_shift(shift)
        turn.published()
        await asyncio.gather(*deliveries)
        published = time.time()
        self.feed.publish(shifts, published)  # to the live view, once Kafka has them
        for a, arrived in zip(admitted, ingested):
            metrics.event_to_publish.observe(max(0.0, published - a.ts / 1000))
            metrics.ingest_to_publish.observe(max(0.0, published - arrived))
        await self._write_rows(
            turn, [(message, key, row) for (message, key, _), row in zip(rows, done.encoded, strict=True)]
        )
        acknowledge(self.app, batch)
        for _, key, state in rows:
            self._written(key, number)
            if self.activity is not None and state.last_ts is not None:
                self.activity.touch(key, state.source_partition, state.last_ts)

    async def _write_rows(self, turn: Turn, rows: Sequence[tuple[Message, bytes, bytes | None]]) -> None:
        """Once the batch before has handed its rows to the producer, write these (``None``
        deletes) and wait for their changelog messages, letting the next batch write meanwhile."""
        await turn.writing()
        sent = await send_rows(self.app, self.users, rows)
        turn.written()
        await rows_written(self.users, sent)

    def _next_batch(self) -> int:
        self._batches_started += 1
        return self._batches_started

    def _written(self, key: bytes, number: int) -> None:
        """Batch ``number`` has written the row of ``key``: unless a later batch in flight has
        changed it since, the table holds it again."""
        if key in self.unwritten and self.unwritten[key][1] == number:
            del self.unwritten[key]

    def _admit(self, message: Message, now_ms: int) -> tuple[tuple[bytes, UserState] | None, Outcome]:
        """One message's outcome, and its user's row (key and state) once it is valid."""
        raw = message.value or b""
        key = message.key if isinstance(message.key, bytes) else None
        checked = self.pipeline.check(raw, key, message.partition, message.offset, now_ms)
        if isinstance(checked, Refused):
            return None, checked
        row_key = checked.user_id.encode()  # the user id as stored (pseudonymised when that is on)
        state = self._load(message, row_key)
        return (row_key, state), self.pipeline.accept(checked, raw, state, message.partition, message.offset)

    def _load(self, message: Message, key: bytes) -> UserState:
        """The user's live state: cached, or changed by a batch in flight (whose row is not written
        yet), or read from the table."""
        state = self.states.get(key)
        if state is None and key in self.unwritten:
            state = self.unwritten[key][0]
            self.states.put(key, state)
        elif state is None:
            with in_partition_of(message):
                row = self.users.get(key)
            state = decode_row(row) if row else UserState.empty()
            self.states.put(key, state)
        return state

    async def send(self, topic: str, user_id: str | None, value: bytes | None, source_partition: int) -> Awaitable[Any]:
        """Hand a message to the producer, keyed by user; returns its delivery future."""
        key = user_id.encode() if user_id is not None else None
        transaction = transactional_id(self.app, EVENTS.name, source_partition)
        return await self.app.producer.send(topic, key, value, None, None, None, transactional_id=transaction)

    def _reset(self, batch: Sequence[Message]) -> None:
        """What failed batches left in memory goes (nothing is in flight); their unwritten rows are
        as they were in the table."""
        self.states.clear()
        self.unwritten.clear()
        for message in batch:
            if isinstance(message.key, bytes):
                self.pipeline.forget(self.pipeline.row_key(message.key).decode(errors="replace"))

    # -- erasure, expiry, hot swap ----------------------------------------------------

    def erase(self, message: Message) -> None:
        """A forget request, with no batch in flight: the user's cached state and engine cache go
        now, before the events after it are admitted; then, in flight like a batch
        (:meth:`complete_erasure`), tombstones replace their last update on the compacted
        ``interest.updates`` and mark the end of their shifts on ``interest.shifts`` (downstream
        services drop their state on it), and their row goes."""
        self.processed[(message.topic, message.partition)] = message.offset
        key = self.pipeline.forget_key(message.key if isinstance(message.key, bytes) else None)
        if key is None:
            letter = DeadLetter.of(
                "forget_without_key",
                "forget requests must be keyed by the user id (UTF-8, at most max_string_length)",
                FORGET.name,
                message.partition,
                message.offset,
                message.value or b"",
                copy=not self.pipeline.pseudonyms.enabled,
            )
            self.metrics.dead_letters.labels(letter.reason).inc()
            self.flight.start([message], functools.partial(self.complete_erasure, message=message, refused=letter))
            return
        self._drop_from_memory(key)
        self.feed.forget(key.decode())
        erased = UserState.empty()  # what the user's events after the request start from
        number = self._next_batch()
        self.states.put(key, erased)
        self.unwritten[key] = (erased, number)
        self.flight.start([message], functools.partial(self.complete_erasure, message=message, number=number, key=key))

    async def complete_erasure(
        self, turn: Turn, message: Message, number: int = 0, key: bytes | None = None, refused: DeadLetter | None = None
    ) -> None:
        """The rest of a forget request in flight: its tombstones (or its dead letter, ``refused``)
        in turn, then its row deleted in turn, then its offset acknowledged."""
        await turn.publishing()
        if refused is not None:
            sent = [await self.send(INVALID.name, None, refused.dumps(), message.partition)]
        else:
            assert key is not None
            sent = [
                await self.send(UPDATES.name, key.decode(), None, message.partition),
                await self.send(SHIFTS.name, key.decode(), None, message.partition),
            ]
        turn.published()
        await asyncio.gather(*sent)
        await self._write_rows(turn, [] if key is None else [(message, key, None)])
        if key is not None:
            self._written(key, number)
            self.metrics.forgotten.inc()
        acknowledge(self.app, [message])

    def _drop_from_memory(self, key: bytes) -> None:
        """Forget what this process holds about a user whose row goes (forgotten, or expired), with
        no batch in flight."""
        self.states.drop(key)
        self.unwritten.pop(key, None)
        if self.activity is not None:
            self.activity.drop(key)
        self.pipeline.forget(key.decode())

    async def expire_inactive_users(self) -> None:
        """Delete the rows of users whose last event is older than the state TTL."""
        assert self.activity is not None
        async with between_batches(self.app):  # no batch is rewriting a row meanwhile
            await self.flight.drained()
            if not self.activity.scanned:
                self.activity.add_scanned(await asyncio.get_running_loop().run_in_executor(None, self._scan_activity))
            expired = self.activity.expired(self.settings.state_ttl_s * 1000)
            for _, key in expired:
                self._drop_from_memory(key)
            await delete_rows(self.app, self.users, expired)
        self.metrics.expired.inc(len(expired))

    def _scan_activity(self) -> dict[bytes, tuple[int, int]]:
        """Every row of this worker's input partitions: (partition, last event time). Run in a thread."""
        active = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == EVENTS.name}
        found = {}
        for key, row in self.users.data.items():
            state = decode_row(row)
            if state.source_partition in active and state.last_ts is not None:
                found[key] = (state.source_partition, state.last_ts)
        return found

    async def look_for_a_new_model(self) -> None:
        loaded = await asyncio.get_running_loop().run_in_executor(None, self.watcher.poll)
        if loaded is None:
            return
        async with between_batches(self.app):  # the swap waits for the batches in flight to end
            await self.flight.drained()
            self.pipeline.swap(loaded.checkpoint, loaded.detector)
            self.serving = loaded
        self.metrics.model.info(loaded.info)
