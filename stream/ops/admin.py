"""Small Kafka helpers: wait for a broker, create or update ShiftWatch's topics idempotently, send a forget request."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from topics.records import ForgetRequest
from topics.specs import ALL_TOPICS, FORGET, TopicSpec, changelog_config


async def wait_until_ready(bootstrap: str, timeout: float = 60.0) -> None:
    """Return once the cluster answers a metadata request; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return
        except (KafkaConnectionError, KafkaError, OSError) as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout} s: {error}") from error
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


class PartitionCountMismatch(KafkaError):
    """A ShiftWatch topic exists with another partition count than the one configured."""


async def create_topics(
    bootstrap: str,
    erasure_deadline_s: float,
    partitions: int,
    app_id: str | None = None,
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
) -> dict[str, str]:
    """Create the topics that do not exist yet, with ``partitions`` partitions each, and give
    those that do the configs of the erasure deadline; with ``app_id``, also that app's table
    changelogs (which its services create at their first start). Returns ``{name: "created" |
    "updated"}``; raises :class:`PartitionCountMismatch`, changing nothing, when a topic exists
    with another partition count (keys would move between partitions: docs/operations.md)."""
    deadline_ms = int(erasure_deadline_s * 1000)
    await wait_until_ready(bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        counts = await partition_counts(admin)
        existing = set(counts)
        wrong = {s.name: counts[s.name] for s in specs if counts.get(s.name, partitions) != partitions}
        if wrong:
            found = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
            raise PartitionCountMismatch(
                f"SHIFTWATCH_PARTITIONS={partitions}, but {found}: a topic's partition count cannot change in place "
                "(see 'Growing the partition count' in docs/operations.md); set SHIFTWATCH_PARTITIONS to the topics' count"
            )
        outcome = {}
        for spec in specs:
            if spec.name not in existing:
                try:
                    await admin.create_topics(
                        [NewTopic(spec.name, partitions, 1, topic_configs=spec.config(deadline_ms))]
                    )
                    outcome[spec.name] = "created"
                    continue
                except TopicAlreadyExistsError:
                    pass
            await _alter(admin, spec.name, spec.config(deadline_ms))
            outcome[spec.name] = "updated"
        changelogs = sorted(t for t in existing if app_id and t.startswith(f"{app_id}-") and t.endswith("-changelog"))
        for name in changelogs:
            await _alter(admin, name, changelog_config(deadline_ms))
            outcome[name] = "updated"
        return outcome
    finally:
        await admin.close()


async def recreate_topics(bootstrap: str, erasure_deadline_s: float, partitions: int) -> None:
    """Delete ShiftWatch's topics and create them afresh, empty, with ``partitions`` each (for
    the test suite and the benchmarks; never on a cluster whose data matters).

    Kafka deletes a topic asynchronously: for a moment the broker may still describe it, or
    refuse to create it again, so this waits until every topic exists with the count asked for."""
    names = {s.name for s in ALL_TOPICS}
    await wait_until_ready(bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = names & set(await partition_counts(admin))
        if doomed:
            await admin.delete_topics(sorted(doomed))
        for _ in range(100):
            if not doomed & set(await partition_counts(admin)):
                break
            await asyncio.sleep(0.1)
        for _ in range(20):
            await create_topics(bootstrap, erasure_deadline_s, partitions)  # may race the deletion
            counts = await partition_counts(admin)
            if all(counts.get(name) == partitions for name in names):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the topics did not come back with {partitions} partitions each: {counts}")
    finally:
        await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """The number of partitions of every topic (a metadata request for all topics: one naming
    a topic that does not exist would have the broker create it)."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics() if t["error_code"] == 0}


async def _alter(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Set a topic's configs (the ones named; the others go back to the broker's defaults)."""
    for response in await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)]):
        for error_code, message, *_ in response.resources:
            if error_code:
                raise KafkaError(f"altering the configs of {topic}: error {error_code} {message}")


async def send_forget_request(bootstrap: str, user_id: str) -> tuple[int, int]:
    """Ask the worker owning ``user_id`` to erase them (keyed like their events); returns (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        request = ForgetRequest(user_id=user_id, requested_at=int(time.time() * 1000))
        sent = await producer.send_and_wait(FORGET.name, key=user_id.encode(), value=request.dumps())
        return sent.partition, sent.offset
    finally:
        await producer.stop()
