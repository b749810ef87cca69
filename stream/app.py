"""The Faust app: input topic -> user table -> incremental engine -> interest updates.

Thin glue around :class:`stream.pipeline.InterestPipeline`. Each message is admitted in its
own event context (so the user's table row, and its changelog, are written for the right
partition); admitted events are scored in micro-batches, one engine step per batch, in a
worker thread so the event loop keeps heartbeating. Offsets are acknowledged only after a
batch's updates have been handed to the producer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from model.checkpoint import load_checkpoint
from stream.pipeline import Admitted, Ignored, InterestPipeline, Refused
from stream.settings import Settings
from stream.state import UserState
from topics.records import DeadLetter
from topics.specs import EVENTS, INVALID, PARTITIONS, UPDATES


class Metrics:
    """The worker's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "shiftwatch_events_total", "Input messages by outcome", ["outcome"], registry=self.registry
        )
        self.dead_letters = Counter(
            "shiftwatch_dead_letters_total", "Refused input messages by reason", ["reason"], registry=self.registry
        )
        self.updates = Counter("shiftwatch_updates_published_total", "Interest updates published", registry=self.registry)
        self.batch_seconds = Histogram(
            "shiftwatch_batch_seconds", "Engine time per micro-batch", registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.batch_size = Histogram(
            "shiftwatch_batch_events", "Events per micro-batch", registry=self.registry,
            buckets=(1, 4, 16, 64, 128, 256, 512, 1024, 2048),
        )  # fmt: skip


def create_app(settings: Settings) -> faust.App:
    checkpoint = load_checkpoint(settings.checkpoint)
    pipeline = InterestPipeline(checkpoint, settings)
    metrics = Metrics()
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        broker_session_timeout=30,
        broker_heartbeat_interval=3,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        table_cleanup_interval=3600,
    )
    # Raw bytes in: the pipeline parses and validates them, and dead-letters them verbatim.
    events_topic = app.topic(
        EVENTS.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS
    )
    updates_topic = app.topic(
        UPDATES.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS
    )
    invalid_topic = app.topic(INVALID.name, value_type=DeadLetter, partitions=PARTITIONS)
    users = app.Table("users", partitions=PARTITIONS, key_type=bytes, value_type=bytes, help="user state rows (JSON)")

    # Deserialised rows of the users this worker serves; the table stays the truth. Any
    # rebalance may move users away and back, so the cache is dropped on every one.
    states: dict[bytes, UserState] = {}

    @app.on_partitions_revoked.connect
    async def forget_states(sender: Any, revoked: Any, **kwargs: Any) -> None:
        states.clear()

    @app.agent(events_topic)
    async def interest(stream: faust.StreamT) -> None:
        pending: dict[tuple[int, int], Admitted] = {}

        async def admit(value: bytes) -> bytes:
            event = stream.current_event
            assert event is not None
            message = event.message
            raw = value or b""
            key: bytes | None = message.key if isinstance(message.key, bytes) else None
            state = states.get(key) if key is not None else None
            if state is None:
                row = users.get(key) if key is not None else None
                state = UserState.from_json(row) if row else UserState.empty()
            outcome = pipeline.admit(raw, key, message.partition, message.offset, state, int(time.time() * 1000))
            if isinstance(outcome, Refused):
                letter = outcome.dead_letter
                metrics.events.labels("refused").inc()
                metrics.dead_letters.labels(letter.reason).inc()
                await invalid_topic.send(key=letter.user_id, value=letter)
            elif isinstance(outcome, Ignored):
                metrics.events.labels(outcome.why).inc()
                users[key] = state.to_json()
                states[key] = state
            else:
                metrics.events.labels("accepted").inc()
                users[key] = state.to_json()
                states[key] = state
                pending[(message.partition, message.offset)] = outcome
            return value

        stream.add_processor(admit)
        loop = asyncio.get_running_loop()
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            admitted = [a for e in batch if (a := pending.pop((e.message.partition, e.message.offset), None))]
            if not admitted:
                continue
            started = time.perf_counter()
            updates = await loop.run_in_executor(None, pipeline.score, admitted)
            metrics.batch_seconds.observe(time.perf_counter() - started)
            metrics.batch_size.observe(len(admitted))
            for update in updates:
                if update is not None:
                    value = json.dumps(update, separators=(",", ":")).encode()
                    await updates_topic.send(key=str(update["user_id"]).encode(), value=value)
                    metrics.updates.inc()

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    app.shiftwatch_pipeline = pipeline  # type: ignore[attr-defined]
    return app
