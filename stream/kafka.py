"""Small Kafka helpers: wait for a broker, create ShiftWatch's topics idempotently, send a forget request."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from topics.records import ForgetRequest
from topics.specs import ALL_TOPICS, FORGET, TopicSpec


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


async def create_topics(bootstrap: str, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> dict[str, str]:
    """Create the topics that do not exist yet; returns ``{name: "created" | "exists"}``."""
    await wait_until_ready(bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        outcome = {s.name: "exists" for s in specs if s.name in existing}
        for spec in missing:
            try:
                await admin.create_topics([NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.config)])
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:
                outcome[spec.name] = "exists"
        return outcome
    finally:
        await admin.close()


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
