"""The fixes to Faust that need no worker to show: a subscription waits for its topics."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.runtime.recovery import QuietWorker, unknown_topics_after

PARTITIONS_OF_THE_LATE_TOPIC = 3
CREATED_AFTER_S = 1.0


async def assignment_of_a_topic_created_after_the_subscription(bootstrap: str, wait: bool) -> tuple[set[int], float]:
    """Subscribe a consumer group to a topic the broker creates ``CREATED_AFTER_S`` later
    (as it does when Faust creates an internal topic while its metadata has yet to list it),
    waiting for it first when ``wait``; the partitions of it the group is assigned within 5 s
    after it exists, and how long the wait took."""
    topic = f"late-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"group-{topic}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:

        async def create_later() -> None:
            await asyncio.sleep(CREATED_AFTER_S)
            await admin.create_topics([NewTopic(topic, PARTITIONS_OF_THE_LATE_TOPIC, 1)])

        creating = asyncio.create_task(create_later())
        started = time.monotonic()
        if wait:
            assert await unknown_topics_after(consumer._client, {topic}, timeout_s=30) == set()
        waited = time.monotonic() - started
        consumer.subscribe([topic])
        await creating
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(consumer.assignment()) < PARTITIONS_OF_THE_LATE_TOPIC:
            await asyncio.sleep(0.1)
        return {tp.partition for tp in consumer.assignment() if tp.topic == topic}, waited
    finally:
        await admin.close()
        await consumer.stop()


@pytest.mark.kafka
def test_a_subscription_that_waits_for_a_late_topic_is_assigned_all_of_it(kafka_bootstrap: str) -> None:
    assigned, waited = asyncio.run(assignment_of_a_topic_created_after_the_subscription(kafka_bootstrap, wait=True))
    assert assigned == set(range(PARTITIONS_OF_THE_LATE_TOPIC))
    assert waited >= CREATED_AFTER_S


@pytest.mark.kafka
def test_without_the_wait_a_late_topic_is_not_assigned(kafka_bootstrap: str) -> None:
    """Why the wait: aiokafka looks the topic up once, and again only after its metadata max
    age (5 minutes); a failure here means aiokafka has changed and the wait may be moot."""
    assigned, _ = asyncio.run(assignment_of_a_topic_created_after_the_subscription(kafka_bootstrap, wait=False))
    assert assigned == set()


@pytest.mark.kafka
def test_a_topic_never_created_is_reported_missing_after_the_timeout(kafka_bootstrap: str) -> None:
    present = f"present-{uuid.uuid4().hex[:8]}"

    async def missing() -> tuple[set[str], float]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        await consumer.start()
        try:
            await admin.create_topics([NewTopic(present, 1, 1)])
            started = time.monotonic()
            return await unknown_topics_after(
                consumer._client, {present, "never-created"}, timeout_s=1
            ), time.monotonic() - started
        finally:
            await consumer.stop()
            await admin.close()

    unknown, waited = asyncio.run(missing())
    assert unknown == {"never-created"} and waited >= 1


@pytest.mark.parametrize(("worker", "debug_records"), [(faust.Worker, True), (QuietWorker, False)])
def test_only_faust_s_own_worker_lowers_the_root_logger_to_debug(
    worker: type[faust.Worker], debug_records: bool
) -> None:
    app = faust.App(f"quiet-{uuid.uuid4().hex}", broker="kafka://127.0.0.1:1")
    root = logging.Logger("root-under-test", logging.WARNING)
    root.addHandler(logging.NullHandler())
    worker(app, loglevel="warn").on_setup_root_logger(root, logging.WARNING)
    assert root.isEnabledFor(logging.DEBUG) is debug_records
