"""The Faust app: input topic -> user table -> incremental engine -> interest updates and shifts.

Thin glue around :class:`stream.worker.pipeline.InterestPipeline`. The agent takes the input in
micro-batches and, for each batch: admits every message into its user's state (in memory),
scores the admitted events with one engine step and their users' shift detectors in a worker
thread (so the event loop keeps heartbeating), publishes the updates, shifts and dead letters
and waits until Kafka has them, then writes each changed user's table row (the detector's
state included) and waits for its changelog message. Only then does Faust acknowledge the
batch's offsets. So a committed offset never runs ahead of the changelog: after a crash,
an event is either in the recovered row (its update and shift were published; its
redelivery is recognised by offset) or it is redelivered and processed as new.

The same agent reads ``privacy.forget-requests`` (co-partitioned: keyed by user), so an
erasure is ordered with the user's events. Between batches, a timer may swap in a new model
version (:mod:`stream.worker.hotswap`) or evict users past the state TTL. Under
``processing_guarantee="exactly_once"`` every output and row goes into the Kafka transaction
of the input partition it came from (:func:`stream.runtime.durable.transactional_id`), and Faust
commits those transactions only between batches.

Messages go straight to the producer, not through Faust's ``topic.send`` or table assignment:
inside an agent ``topic.send`` attaches the message to the offset and publishes it at the
next commit (seconds of latency), and rows are written by :func:`stream.runtime.durable.write_rows`
(a table assignment's changelog message may still sit in Faust's buffer when the offsets
are committed)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT

from model.net.checkpoint import load_checkpoint
from model.online.detector import load_detector
from model.data.vocab import OOV_ID
from stream.worker.pipeline import Admitted, Ignored, InterestPipeline, Refused
from stream.runtime.durable import current_event, delete_rows, schedule_segment_rolls, transactional_id, write_rows
from stream.runtime.app import new_app
from stream.worker.hotswap import CheckpointWatcher, Loaded
from stream.worker.live import ShiftFeed
from stream.worker.metrics import WorkerMetrics
from stream.settings import Settings
from stream.worker.guard import BatchGuard
from stream.worker.state import StateCache, UserState
from stream.worker.ttl import ActivityIndex
from stream.worker.views import add_views
from topics.records import DeadLetter
from topics.specs import EVENTS, FORGET, INVALID, PARTITIONS, SHIFTS, UPDATES, changelog_config

log = logging.getLogger(__name__)

FLOW_CATEGORIES = 20  # categories with their own label value in shiftwatch_shift_flows_total


def create_app(settings: Settings) -> faust.App:
    checkpoint = load_checkpoint(settings.checkpoint)
    detector = load_detector(settings.checkpoint, checkpoint.model_version)
    pipeline = InterestPipeline(checkpoint, settings, detector)
    if settings.processing_guarantee == "exactly_once":
        # The local store may hold writes of transactions a crash aborted; rebuild it from the
        # changelog, which a transactional reader sees without them.
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    app, registry = new_app(
        settings, settings.app_id, settings.data_dir,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size), table_cleanup_interval=3600,
        processing_guarantee=settings.processing_guarantee,
    )  # fmt: skip
    processed: dict[tuple[str, int], int] = {}  # the last input offset processed, by partition

    def lags() -> dict[tuple[str, int], int]:
        """Messages behind each assigned partition's end, once this worker has processed one of it."""
        out = {}
        for tp in app.consumer.assignment():
            last = processed.get((tp.topic, tp.partition))
            end = app.consumer.highwater(tp) if last is not None else None
            if end is not None:
                out[(tp.topic, tp.partition)] = max(0, end - last - 1)
        return out

    counted = {"rows": 0, "at": float("-inf")}

    def table_rows() -> int:
        """Rows in this worker's table store, counted at most every 30 s (a full key scan)."""
        if time.monotonic() - counted["at"] >= 30:
            counted["rows"], counted["at"] = len(users.data), time.monotonic()
        return int(counted["rows"])

    feed = ShiftFeed()
    top_categories = checkpoint.tokenizer.categories.tokens[OOV_ID + 1 : OOV_ID + 1 + FLOW_CATEGORIES]  # most frequent first
    serving = [Loaded(checkpoint, detector)]  # what the views and shiftwatch_model_info describe
    metrics = WorkerMetrics(registry, pipeline.scorer.engine, serving[0].info, lags, table_rows, top_categories)
    # Raw bytes in: the pipeline parses and validates them, and dead-letters them verbatim.
    # Forget requests share the agent (and its partitions: both keyed by user), so an erasure
    # is ordered with the user's events and no batch in flight writes the row back.
    events_topic = app.topic(
        EVENTS.name, FORGET.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=PARTITIONS,
    )  # fmt: skip
    users = app.Table(
        "users", partitions=PARTITIONS, key_type=bytes, value_type=bytes, help="user state rows (JSON)",
        extra_topic_configs=changelog_config(int(settings.erasure_deadline_s * 1000)),
    )  # fmt: skip
    # The table stays the truth; any rebalance may move users away and back, so the cache of
    # deserialised rows is dropped on every one.
    states = StateCache(settings.state_cache_users)

    activity = ActivityIndex() if settings.state_ttl_s > 0 else None

    @app.on_partitions_revoked.connect
    async def forget_states(sender: Any, revoked: Any, **kwargs: Any) -> None:
        states.clear()
        if activity is not None:
            activity.clear()

    def drop_from_memory(key: bytes) -> None:
        """Forget what this process holds about a user whose row goes (forgotten, or expired)."""
        states.drop(key)
        if activity is not None:
            activity.drop(key)
        pipeline.forget(key.decode())

    def load(event: EventT, key: bytes) -> UserState:
        state = states.get(key)
        if state is None:
            with current_event(event):
                row = users.get(key)
            state = UserState.from_json(row) if row else UserState.empty()
            states.put(key, state)
        return state

    async def send(topic: str, user_id: str | None, value: bytes | None, source_partition: int) -> Awaitable[Any]:
        """Hand a message to the producer, keyed by user; returns its delivery future."""
        key = user_id.encode() if user_id is not None else None
        transaction = transactional_id(app, EVENTS.name, source_partition)
        return await app.producer.send(topic, key, value, None, None, None, transactional_id=transaction)

    watcher = CheckpointWatcher(settings.checkpoint, serving[0].info["model_version"])

    if settings.checkpoint_poll_s > 0:

        @app.timer(interval=settings.checkpoint_poll_s)
        async def look_for_a_new_model() -> None:
            loaded = await asyncio.get_running_loop().run_in_executor(None, watcher.poll)
            if loaded is None:
                return
            async with app.consumer.between_batches:  # the swap waits for the batch in flight to end
                pipeline.swap(loaded.checkpoint, loaded.detector)
                serving[0] = loaded
            metrics.model.info(loaded.info)

    def scan_activity() -> dict[bytes, tuple[int, int]]:
        """Every row of this worker's input partitions: (partition, last event time). Run in a thread."""
        active = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == EVENTS.name}
        found = {}
        for key, row in users.data.items():
            state = UserState.from_json(row)
            if state.source_partition in active and state.last_ts is not None:
                found[key] = (state.source_partition, state.last_ts)
        return found

    schedule_segment_rolls(app, users, EVENTS.name, settings.erasure_deadline_s, UPDATES.name)

    if activity is not None:

        @app.timer(interval=settings.state_sweep_s)
        async def expire_inactive_users() -> None:
            async with app.consumer.between_batches:  # no batch is rewriting a row meanwhile
                if not activity.scanned:
                    activity.add_scanned(await asyncio.get_running_loop().run_in_executor(None, scan_activity))
                expired = activity.expired(settings.state_ttl_s * 1000)
                for _, key in expired:
                    drop_from_memory(key)
                await delete_rows(app, users, expired)
            metrics.expired.inc(len(expired))

    def admit_one(event: EventT, now_ms: int) -> tuple[tuple[bytes, UserState] | None, Admitted | Refused | Ignored]:
        """One message's outcome, and its user's row (key and state) once it is valid."""
        message = event.message
        raw = message.value or b""
        checked = pipeline.check(raw, message.key if isinstance(message.key, bytes) else None, message.partition, message.offset, now_ms)
        if isinstance(checked, Refused):
            return None, checked
        key = checked.user_id.encode()  # the row key: the user id as stored (pseudonymised when that is on)
        state = load(event, key)
        return (key, state), pipeline.accept(checked, raw, state, message.partition, message.offset)

    async def process(batch: Sequence[EventT]) -> None:
        now_ms = int(time.time() * 1000)
        admitted: list[Admitted] = []
        ingested: list[float] = []  # each admitted event's arrival in Kafka (record timestamp, seconds)
        letters: list[DeadLetter] = []
        changed: dict[bytes, tuple[EventT, UserState]] = {}
        for event in batch:  # no await in this loop: a rebalance may not clear the states mid-batch
            message = event.message
            try:
                row, outcome = admit_one(event, now_ms)
            except Exception as error:  # noqa: BLE001 - a bug on one message must not cost the batch
                log.error("Admitting %s[%d]@%d raised %s", message.topic, message.partition, message.offset, type(error).__name__)
                row, outcome = None, Refused(pipeline.internal_error(message.value or b"", message.partition, message.offset, error))
            processed[(message.topic, message.partition)] = message.offset
            if isinstance(outcome, Refused):
                reason = outcome.dead_letter.reason
                letters.append(outcome.dead_letter)
                metrics.events.labels("late" if reason == "late" else "invalid").inc()
                metrics.dead_letters.labels(reason).inc()
                if row is None:
                    continue
            elif isinstance(outcome, Ignored):
                metrics.events.labels(outcome.why).inc()
            else:
                metrics.events.labels("accepted").inc()
                admitted.append(outcome)
                ingested.append(message.timestamp)
            if row is not None:
                changed[row[0]] = (event, row[1])
        deliveries = [await send(INVALID.name, letter.user_id, letter.dumps(), letter.source_partition) for letter in letters]
        source = {a.user_id: a.state.source_partition for a in admitted}
        shifts: list[dict[str, object]] = []
        if admitted:
            started = time.perf_counter()
            scored = await asyncio.get_running_loop().run_in_executor(None, pipeline.score, admitted)
            metrics.model_step.observe(time.perf_counter() - started)
            metrics.batch_size.observe(len(admitted))
            for update in scored.updates:
                if update is not None:
                    deliveries.append(await send(UPDATES.name, str(update["user_id"]), dump(update), source[update["user_id"]]))
                    metrics.updates.inc()
            shifts = scored.shifts
            for shift in shifts:
                deliveries.append(await send(SHIFTS.name, str(shift["user_id"]), dump(shift), source[shift["user_id"]]))
                metrics.count_shift(shift)
        await asyncio.gather(*deliveries)
        feed.publish(shifts)  # to the live view, once Kafka has them
        published = time.time()
        for a, arrived in zip(admitted, ingested):
            metrics.event_to_publish.observe(max(0.0, published - a.ts / 1000))
            metrics.ingest_to_publish.observe(max(0.0, published - arrived))
        await write_rows(app, users, [(event, key, state.to_json()) for key, (event, state) in changed.items()])
        if activity is not None:
            for key, (event, state) in changed.items():
                if state.last_ts is not None:
                    activity.touch(key, event.message.partition, state.last_ts)

    async def erase(event: EventT) -> None:
        """A forget request: the user's row, cached state and engine cache go, and tombstones
        replace their last update on the compacted ``interest.updates`` and mark the end of
        their shifts on ``interest.shifts`` (downstream services drop their state on it)."""
        message = event.message
        key = pipeline.forget_key(message.key if isinstance(message.key, bytes) else None)
        if key is None:
            letter = DeadLetter.of(
                "forget_without_key", "forget requests must be keyed by the user id (UTF-8, at most max_string_length)",
                FORGET.name, message.partition, message.offset, message.value or b"", copy=not pipeline.pseudonyms.enabled,
            )  # fmt: skip
            metrics.dead_letters.labels(letter.reason).inc()
            await (await send(INVALID.name, None, letter.dumps(), message.partition))
            return
        user = key.decode()
        drop_from_memory(key)
        feed.forget(user)
        await asyncio.gather(
            await send(UPDATES.name, user, None, message.partition), await send(SHIFTS.name, user, None, message.partition)
        )
        await write_rows(app, users, [(event, key, None)])
        processed[(message.topic, message.partition)] = message.offset
        metrics.forgotten.inc()

    async def handle(batch: Sequence[EventT]) -> None:
        """A batch in the order it came, forget requests between the events around them."""
        start = 0
        for i, event in enumerate(batch):
            if event.message.topic == FORGET.name:
                if start < i:
                    await process(batch[start:i])
                await erase(event)
                start = i + 1
        if start < len(batch):
            await process(batch[start:])

    def drop_attempt(batch: Sequence[EventT]) -> Callable[[], None]:
        """What a failed attempt leaves in memory goes; the rows it did not write are as they were."""

        def reset() -> None:
            states.clear()
            for event in batch:
                if isinstance(event.message.key, bytes):
                    pipeline.forget(pipeline.row_key(event.message.key).decode(errors="replace"))

        return reset

    # Under exactly-once a retry would put the batch's outputs twice into the open transaction;
    # stopping at once lets the broker abort it.
    guard = BatchGuard(attempts=1 if settings.processing_guarantee == "exactly_once" else 3)

    @app.agent(events_topic)
    async def interest(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            async with app.consumer.between_batches:  # no commit mid-batch (stream/runtime/recovery.py)
                await guard.run(lambda: handle(batch), reset=drop_attempt(batch))

    add_views(app, users, lambda: serving[0], feed, registry, pipeline.pseudonyms, settings)
    return app


def dump(record: dict[str, object]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()
