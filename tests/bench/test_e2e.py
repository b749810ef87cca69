"""The end-to-end benchmark's load: every event new to the worker, every user's history in time
order, each sent at its scheduled time into its key's partition."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from aiokafka.partitioner import DefaultPartitioner

from bench.e2e import Load, offer
from tests.stream.conftest import consume, recreate_topics
from tests.stream.helpers import PARTITIONS, taobao_users
from topics.specs import EVENTS


def test_the_load_repeats_the_log_later_in_event_time_under_fresh_ids() -> None:
    log = taobao_users(5)
    load = Load(log)
    n = len(load.base)
    events = load.take(n) + load.take(n + 3)  # one pass, a second, and the start of a third
    assert load.taken == 2 * n + 3 and len(events) == 2 * n + 3
    assert len({e.event_id for e in events}) == len(events)
    assert all(len(e.event_id) == 24 and int(e.event_id, 16) >= 0 for e in events)
    values = [json.loads(e.value) for e in events]
    assert [v["event_id"] for v in values] == [e.event_id for e in events]
    assert [e.key for e in events[:n]] == [e.key for e in events[n : 2 * n]]
    assert {e.key.decode() for e in events} == {u.user_id for u in log.users}
    for first, again in zip(values[:n], values[n : 2 * n]):
        assert again["ts"] - first["ts"] == load.span_ms
        assert {k: v for k, v in again.items() if k not in ("ts", "event_id")} == {
            k: v for k, v in first.items() if k not in ("ts", "event_id")
        }
    times: defaultdict[str, list[int]] = defaultdict(list)
    for value in values:
        times[value["user_id"]].append(value["ts"])
    assert all(ts == sorted(ts) for ts in times.values())


@pytest.mark.kafka
def test_the_generator_sends_every_event_stamped_with_its_schedule_into_its_key_s_partition(kafka_bootstrap) -> None:
    recreate_topics(kafka_bootstrap)
    events = Load(taobao_users(5)).take(300)
    rate = 2_000.0
    offered = asyncio.run(offer(kafka_bootstrap, events, rate))
    start = offered.scheduled_ms[0]
    assert all(abs(stamp - start - i / rate * 1000) <= 1 for i, stamp in enumerate(offered.scheduled_ms))
    records = {json.loads(r.value)["event_id"]: r for r in consume(kafka_bootstrap, EVENTS.name, len(events))}
    assert len(records) == len(events)
    partitions = list(range(PARTITIONS))
    for event, stamp in zip(events, offered.scheduled_ms):
        record = records[event.event_id]
        assert (record.key, record.value, record.timestamp) == (event.key, event.value, stamp)
        assert record.partition == DefaultPartitioner()(event.key, partitions, partitions)
    by_partition: defaultdict[int, list] = defaultdict(list)
    for record in records.values():
        by_partition[record.partition].append(record)
    for sent in by_partition.values():  # each partition in schedule order
        stamps = [r.timestamp for r in sorted(sent, key=lambda r: r.offset)]
        assert stamps == sorted(stamps)
