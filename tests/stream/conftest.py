"""Fixtures for tests against a real Kafka broker: the embedded one, or ``KAFKA_BOOTSTRAP``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from model.net.checkpoint import save_checkpoint
from model.online.detector import ShiftDetector, save_detector
from stream.ops.admin import recreate_topics as recreate_empty_topics
from stream.ops.process import WorkerProcess
from stream.settings import Settings
from tests.stream.helpers import (
    PARTITIONS,
    SMALL_MODEL_DETECTOR,
    offline_shifts,
    raw_messages,
    small_checkpoint,
    taobao_users,
)
from topics.schema import validator
from topics.specs import EVENTS, OUTPUT_TOPICS, UPDATES


def recreate_topics(bootstrap: str, partitions: int = PARTITIONS) -> None:
    """Empty ShiftWatch topics with ``partitions`` each (:func:`stream.ops.admin.recreate_topics`)."""
    asyncio.run(recreate_empty_topics(bootstrap, Settings().erasure_deadline_s, partitions))


@pytest.fixture
def fresh_topics(kafka_bootstrap: str) -> str:
    """Empty ShiftWatch topics for one test; returns a Faust app id of its own."""
    recreate_topics(kafka_bootstrap)
    return f"shiftwatch-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def stream_log():
    return taobao_users(25)


@pytest.fixture(scope="session")
def stream_checkpoint(stream_log, tmp_path_factory: pytest.TempPathFactory):
    checkpoint = small_checkpoint(stream_log)
    directory = tmp_path_factory.mktemp("checkpoint")
    save_checkpoint(checkpoint, directory)
    save_detector(ShiftDetector(SMALL_MODEL_DETECTOR), directory, {"tuned_on": "nothing: the tests' setting"})
    return checkpoint, directory


@pytest.fixture(scope="session")
def stream_shifts(stream_log, stream_checkpoint) -> dict[str, dict]:
    """The shifts a crash-free run over :func:`stream_log` raises, by shift id (no Kafka)."""
    return offline_shifts(stream_checkpoint[0], raw_messages(stream_log))


@pytest.fixture
def worker_factory(kafka_bootstrap: str, fresh_topics: str, stream_checkpoint, tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def make(**settings: str) -> WorkerProcess:
        data_dir = tmp_path / f"worker{len(workers)}"
        # a killed worker's partitions move on after 10 s, not 30
        options: dict[str, Any] = {
            "checkpoint": stream_checkpoint[1],
            "data_dir": data_dir,
            "session_timeout_s": 10,
            "partitions": PARTITIONS,
            **settings,
        }
        worker = WorkerProcess(
            data_dir.with_suffix(".log"),
            "info",
            kafka_bootstrap=kafka_bootstrap,
            app_id=fresh_topics,
            **options,
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(kill=True)


async def _produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


def produce_to(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    """One message into one partition."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value=value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(send())


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    asyncio.run(_produce(bootstrap, topic, messages))


async def _consume(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float,
    worker: WorkerProcess | None,
    until: Callable[[list], bool] | None,
    isolation_level: str,
) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, isolation_level=isolation_level
    )
    await consumer.start()
    got: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        done = until or (lambda records: len(records) >= count)
        while not done(got) and loop.time() < deadline:
            if worker is not None and worker.exited():
                raise AssertionError(f"the worker exited with {worker.returncode}:\n{worker.tail()}")
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(records)
        if until is not None and not until(got):
            raise AssertionError(f"{topic}: the awaited records did not come within {timeout:g} s ({len(got)} read)")
        # anything beyond ``count`` that is already there would be a bug: give it a moment
        batches = await consumer.getmany(timeout_ms=1500)
        for records in batches.values():
            got.extend(records)
    finally:
        await consumer.stop()
    check_against_schema(topic, got)
    return got


def check_against_schema(topic: str, records: list) -> None:
    """Every message the suite reads from a ShiftWatch output topic meets the topic's schema."""
    spec = next((s for s in OUTPUT_TOPICS if s.name == topic), None)
    if spec is None:
        return
    for record in records:
        if record.value is not None:  # a tombstone
            validator(spec).validate(json.loads(record.value))


def consume(
    bootstrap: str,
    topic: str,
    count: int = 0,
    timeout: float = 120.0,
    worker: WorkerProcess | None = None,
    until: Callable[[list], bool] | None = None,
    isolation_level: str = "read_uncommitted",
) -> list:
    """Records of ``topic`` from the start until ``count`` arrived (or ``timeout``: the caller
    checks the count), or until ``until(records)`` holds (failing after ``timeout``), plus any
    stragglers; ``read_committed`` skips aborted transactions."""
    return asyncio.run(_consume(bootstrap, topic, count, timeout, worker, until, isolation_level))


async def _read_all(bootstrap: str, topic: str) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        got: list = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(*partitions, timeout_ms=500)).values():
                got.extend(records)
        return got
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer._client.cluster.partitions_for_topic(topic) or set()


def read_all(bootstrap: str, topic: str) -> list:
    """Every record of ``topic`` there is now, from the beginning of each partition to its end."""
    return asyncio.run(_read_all(bootstrap, topic))


async def _committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == EVENTS.name and meta.offset >= 0
        }
    finally:
        await admin.close()


def outputs_past_the_commit(bootstrap: str, group: str) -> int:
    """Updates on Kafka (committed to it or not) of input events at or past their partition's
    committed offset: the outputs of a batch whose offsets were not committed."""
    where = {
        json.loads(r.value)["event_id"]: (r.partition, r.offset)
        for r in read_all(bootstrap, EVENTS.name)
        if _is_event(r.value)
    }
    committed = asyncio.run(_committed(bootstrap, group))
    past = 0
    for record in read_all(bootstrap, UPDATES.name):
        if record.value is not None and (source := where.get(json.loads(record.value)["event_id"])) is not None:
            past += source[1] >= committed.get(source[0], 0)
    return past


def _is_event(value: bytes | None) -> bool:
    try:
        return isinstance(json.loads(value or b""), dict)
    except ValueError:
        return False


def kill_inside_a_batch(worker: WorkerProcess, bootstrap: str, timeout: float = 60.0) -> int:
    """SIGKILL ``worker`` once Kafka shows outputs of a batch whose offsets are not committed,
    then show from Kafka that the kill cut one: returns how many such outputs there are."""
    group = worker.env["SHIFTWATCH_APP_ID"]
    deadline = time.monotonic() + timeout
    while outputs_past_the_commit(bootstrap, group) == 0:
        assert time.monotonic() < deadline and not worker.exited(), "no batch in flight to cut"
        time.sleep(0.05)
    worker.stop(kill=True)
    past = outputs_past_the_commit(bootstrap, group)
    assert past > 0, "the kill landed between batches (a commit came first): nothing to recover"
    return past
