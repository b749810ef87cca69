"""Fault injection on the real broker: fuzzed input, rows the broker refuses, a worker killed while
another runs, a broker restart. (A worker killed and restarted alone: tests/stream/worker/test_worker.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.ops.admin import wait_until_ready
from stream.worker.guard import EXIT_CODE
from stream.worker.validation import REASONS
from tests.stream import hostile
from tests.stream.conftest import consume, kill_inside_a_batch, produce, produce_to
from tests.stream.helpers import (
    PARTITIONS,
    assert_update_matches,
    key_per_partition,
    offline_probabilities,
    partition_of,
    positions,
    raw_messages,
    same_update,
)
from tests.stream.worker.test_worker import get_json, scrape
from topics.records import DEAD_LETTER_COPY_BYTES
from topics.schema import validator
from topics.specs import DAY_MS, EVENTS, INVALID, UPDATES, changelog_config

FUZZ_CASES = 10_000
NOW_MS = int(time.time() * 1000)


def as_message(payload: bytes, i: int) -> tuple[bytes | None, bytes]:
    """Key a message by its user id when it has a usable one (but every seventh by another
    user's), and make parseable event ids unique: a repeated id is a duplicate, neither
    accepted nor refused."""
    try:
        data = json.loads(payload)
    except Exception:  # noqa: BLE001 - hostile on purpose: too deep, not UTF-8, not JSON
        return (b"fuzz" if i % 2 else None), payload
    if not isinstance(data, dict):
        return None, payload
    if isinstance(data.get("event_id"), (str, int)) and not isinstance(data.get("event_id"), bool):
        data["event_id"] = f"{data['event_id']}#{i}"
        payload = json.dumps(data).encode()
    user = data.get("user_id")
    usable = isinstance(user, (str, int)) and not isinstance(user, bool) and i % 7
    return (str(user).encode("utf-8", "surrogatepass") if usable else b"someone-else"), payload


@pytest.mark.kafka
def test_fuzzed_input_never_crashes_the_worker_and_nothing_vanishes(kafka_bootstrap, worker_factory) -> None:
    corpus = hostile.corpus(FUZZ_CASES)
    assert len(corpus) == FUZZ_CASES
    messages = [as_message(payload, i) for i, payload in enumerate(corpus)]
    messages += [
        (b"u1", b"\xff\xfe\x00 not utf-8"),
        (b"u1", '{"user_id": "u1"}'.encode("utf-16")),
        (b"u1", b'{"event_id": "\xc3\x28", "user_id": "u1"}'),  # invalid UTF-8 inside JSON
        (
            b"u1",
            json.dumps(
                {
                    "event_id": "big",
                    "user_id": "u1",
                    "item_id": "i",
                    "category_id": "c",
                    "event_type": "view",
                    "ts": NOW_MS,
                    "padding": "x" * 100_000,
                }
            ).encode(),
        ),
        (b"u1", b"[" * 50_000),  # oversized and deeply nested
        (None, b""),
    ]
    worker = worker_factory(batch_size="256").start()
    pid = worker.pid
    produce(kafka_bootstrap, EVENTS.name, messages)

    def settled(records: list) -> bool:
        try:
            metrics = scrape(worker.web_port)
        except OSError:  # not serving yet
            return False
        seen = sum(v for (name, _), v in metrics.items() if name == "shiftwatch_events_total")
        return seen >= len(messages)

    consume(kafka_bootstrap, UPDATES.name, worker=worker, until=settled, timeout=240)
    metrics = scrape(worker.web_port)
    outcomes = {
        dict(labels)["outcome"]: v for (name, labels), v in metrics.items() if name == "shiftwatch_events_total"
    }
    letters_by_reason = {
        dict(labels)["reason"]: v for (name, labels), v in metrics.items() if name == "shiftwatch_dead_letters_total"
    }
    dead_lettered = sum(letters_by_reason.values())
    assert outcomes.get("duplicate", 0) == outcomes.get("redelivered", 0) == 0
    assert outcomes.get("accepted", 0) + dead_lettered == len(messages), (outcomes, letters_by_reason)
    assert outcomes.get("accepted", 0) > 100 and dead_lettered > FUZZ_CASES // 2, "the corpus exercises both paths"
    assert set(letters_by_reason) <= set(REASONS) and len(letters_by_reason) >= 10, (
        letters_by_reason
    )  # no internal_error

    letters = [json.loads(r.value) for r in consume(kafka_bootstrap, INVALID.name, int(dead_lettered), worker=worker)]
    assert len(letters) == dead_lettered
    assert Counter(letter["reason"] for letter in letters) == Counter({r: int(v) for r, v in letters_by_reason.items()})
    originals = Counter(base64.b64decode(letter["original_base64"]) for letter in letters)
    assert originals[b"\xff\xfe\x00 not utf-8"] == 1 and originals[b"[" * 50_000] == 1, (
        "dead letters keep the exact bytes"
    )
    assert all(
        letter["original_size"] == len(base64.b64decode(letter["original_base64"]))
        for letter in letters
        if not letter["original_truncated"]
    ), "whole copies are whole"
    assert any(letter["original_truncated"] and letter["original_size"] > DEAD_LETTER_COPY_BYTES for letter in letters)
    for letter in letters:
        validator(INVALID).validate(letter)
    assert all(letter["detail"] for letter in letters)
    assert len(consume(kafka_bootstrap, UPDATES.name, int(outcomes["accepted"]), worker=worker)) == outcomes["accepted"]
    assert worker.pid == pid and not worker.exited(), "the worker never restarted"
    assert "Traceback" not in worker.tail(10**7)


async def create_topic(bootstrap: str, topic: NewTopic) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([topic])
    finally:
        await admin.close()


def check_every_event_has_its_exact_update(updates: list, stream_log, checkpoint) -> None:
    """Each event's update equals the crash-free model's; an update seen twice (a batch
    redelivered after a failure) is the same both times."""
    reference = offline_probabilities(checkpoint, stream_log)
    where = positions(raw_messages(stream_log))
    latest: dict[str, dict] = {}
    for record in updates:
        update = json.loads(record.value)
        previous = latest.get(update["event_id"])
        assert previous is None or same_update(previous, update), json.dumps([previous, update])
        latest[update["event_id"]] = update
        assert_update_matches(update, checkpoint, reference[update["user_id"]])
        assert where[update["event_id"]] == (update["user_id"], update["sequence_length"] - 1), (
            "no event lost or doubled in a row"
        )
    assert set(latest) == set(where)


def all_updates(bootstrap: str, stream: list, worker) -> list:
    wanted = {json.loads(value)["event_id"] for _, value in stream}
    complete = lambda records: wanted <= {json.loads(r.value)["event_id"] for r in records}  # noqa: E731
    return consume(bootstrap, UPDATES.name, worker=worker, until=complete, timeout=180)


async def set_topic_configs(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    """Every config of ``topic`` (AlterConfigs resets those not given to the broker's defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
        assert all(error == 0 for error, *_ in response.resources), response
    finally:
        await admin.close()


@pytest.mark.kafka
def test_batches_whose_rows_the_broker_refuses_are_retried_then_the_worker_stops_and_nothing_is_lost(
    kafka_bootstrap, worker_factory, fresh_topics, stream_log, stream_checkpoint
) -> None:
    """The users changelog refuses every row (``max.message.bytes`` below any row's size), so
    batches in flight fail after their updates are published: they are done again from the
    table, and once the attempts are spent the worker stops without committing. With the
    limit raised, a new worker gives every event its exact update (the ones published before
    the failure again, identical)."""
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    changelog = f"{fresh_topics}-users-changelog"  # as the worker would create it at its first start
    configs = changelog_config(DAY_MS)
    refusing = NewTopic(changelog, PARTITIONS, 1, topic_configs={**configs, "max.message.bytes": "100"})
    asyncio.run(create_topic(kafka_bootstrap, refusing))
    failing = worker_factory(batch_size="16").start()
    produce(kafka_bootstrap, EVENTS.name, stream)
    deadline = time.monotonic() + 120
    while not failing.exited() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = failing.tail(10**7)
    assert failing.returncode == EXIT_CODE, log[-3000:]
    assert "attempt 1 of 3); retrying" in log and "attempt 2 of 3); retrying" in log
    assert "A batch failed 3 time(s)" in log

    asyncio.run(set_topic_configs(kafka_bootstrap, changelog, {**configs, "max.message.bytes": str(1 << 20)}))
    worker = worker_factory(batch_size="16").start()
    updates = all_updates(kafka_bootstrap, stream, worker)
    check_every_event_has_its_exact_update(updates, stream_log, checkpoint)
    assert not worker.exited()


@pytest.mark.kafka
def test_when_one_of_two_workers_is_killed_the_other_takes_over_with_its_state(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint
) -> None:
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    first, second = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    doomed = worker_factory(batch_size="16").start()
    survivor = worker_factory(batch_size="16").start()
    produce(kafka_bootstrap, EVENTS.name, first)
    assert len(consume(kafka_bootstrap, UPDATES.name, len(first), worker=survivor)) >= len(first)
    status, routes = get_json(survivor.web_port, "/router/")
    owners = {url for url, tables in routes.items() if any(tables.values())}
    assert status == 200 and len(owners) == 2, "both workers owned partitions"

    doomed.stop(kill=True)  # SIGKILL: no goodbye; the group notices after the session timeout
    produce(kafka_bootstrap, EVENTS.name, second)
    updates = all_updates(kafka_bootstrap, stream, survivor)
    check_every_event_has_its_exact_update(updates, stream_log, checkpoint)
    status, routes = get_json(survivor.web_port, "/router/")
    assert [url for url, tables in routes.items() if any(tables.values())] == [f"http://127.0.0.1:{survivor.web_port}"]
    for user in stream_log.users:  # the dead worker's rows were recovered from the changelog
        status, interests = get_json(survivor.web_port, f"/users/{user.user_id}/interests")
        assert status == 200 and interests["events"] == len(user)
    assert not survivor.exited()


@pytest.mark.kafka
def test_after_a_broker_restart_the_worker_carries_on_and_loses_nothing(
    kafka_broker, kafka_bootstrap, worker_factory, stream_log, stream_checkpoint
) -> None:
    if kafka_broker is None:
        pytest.skip("restarts the embedded broker; KAFKA_BOOTSTRAP names an external one")
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    first, second = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    worker = worker_factory(batch_size="16").start()
    pid = worker.pid
    produce(kafka_bootstrap, EVENTS.name, first)
    consume(kafka_bootstrap, UPDATES.name, len(first) // 3, worker=worker)  # mid-stream
    kafka_broker.stop()
    time.sleep(2)
    assert kafka_broker.start() == kafka_bootstrap
    asyncio.run(wait_until_ready(kafka_bootstrap))
    produce(kafka_bootstrap, EVENTS.name, second)
    updates = all_updates(kafka_bootstrap, stream, worker)
    check_every_event_has_its_exact_update(updates, stream_log, checkpoint)
    assert worker.pid == pid and not worker.exited(), "the same worker process reconnected"


@pytest.mark.kafka
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_state_ttl_evicts_users_inactive_for_longer_than_it(
    kafka_bootstrap, worker_factory, stream_log, guarantee
) -> None:
    """Users past the TTL go, the others stay; then one late event per partition expires
    everyone else there, in a sweep after the partitions' last input: under exactly-once
    too, a reader of committed messages sees every tombstone."""
    ttl_s = 6 * 3600
    stream = raw_messages(stream_log)
    last_ts: dict[str, tuple[int, int]] = {}  # worked out here: user -> (input partition, last event time)
    for key, value in stream:
        last_ts[key.decode()] = (partition_of(key), json.loads(value)["ts"])
    stream_time = {p: max(ts for q, ts in last_ts.values() if q == p) for p, _ in last_ts.values()}
    expired = {user for user, (p, ts) in last_ts.items() if ts < stream_time[p] - ttl_s * 1000}
    assert 0 < len(expired) < len(last_ts)

    # sweeps (every 3 s) come after the commit (every 0.3 s) of the batch that made them due
    worker = worker_factory(
        state_ttl_s=ttl_s, state_sweep_s="3", commit_interval_s="0.3", processing_guarantee=guarantee
    ).start()
    produce(kafka_bootstrap, EVENTS.name, stream)
    assert len(consume(kafka_bootstrap, UPDATES.name, len(stream), worker=worker)) >= len(stream)
    changelog = f"{worker.env['SHIFTWATCH_APP_ID']}-users-changelog"

    def wait_until_gone(expected: set[str]) -> None:
        deadline = time.monotonic() + 30
        while (
            gone := {user for user in last_ts if get_json(worker.web_port, f"/users/{user}/interests")[0] == 404}
        ) != expected:
            assert time.monotonic() < deadline, (sorted(gone ^ expected), worker.tail())
            time.sleep(1)

    def tombstoned(expected: set[str]) -> set[str]:
        records = consume(
            kafka_bootstrap,
            changelog,
            worker=worker,
            isolation_level="read_committed",
            until=lambda records: expected <= {r.key.decode() for r in records if r.value is None},
        )
        last = {r.key.decode(): r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))}
        return {user for user, value in last.items() if value is None}

    wait_until_gone(expired)
    assert scrape(worker.web_port)[("shiftwatch_users_expired_total", ())] >= len(expired)
    assert tombstoned(expired) == expired, "a tombstone is each evicted row's last word"

    late = max(stream_time.values()) + 2 * ttl_s * 1000
    clocks = key_per_partition("clock")
    used = set(stream_time)
    produce(
        kafka_bootstrap,
        EVENTS.name,
        [
            (
                clocks[p],
                json.dumps(
                    {
                        "event_id": f"{clocks[p].decode()}:0",
                        "user_id": clocks[p].decode(),
                        "item_id": "1",
                        "category_id": "1",
                        "event_type": "view",
                        "ts": late,
                    }
                ).encode(),
            )
            for p in sorted(used)
        ],
    )
    everyone = set(last_ts)
    wait_until_gone(everyone)
    assert tombstoned(everyone) == everyone


@pytest.mark.kafka
def test_exactly_once_publishes_every_update_once_across_a_kill(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint
) -> None:
    """With ``processing_guarantee=exactly_once``, a worker killed (SIGKILL) mid-stream leaves
    its open transactions to be aborted: a consumer reading committed messages sees each
    event's update once, none lost, none repeated (at-least-once repeats a cut batch)."""
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    first, second = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    worker = worker_factory(batch_size="16", processing_guarantee="exactly_once", commit_interval_s="0.3").start()
    produce(kafka_bootstrap, EVENTS.name, first)
    consume(kafka_bootstrap, UPDATES.name, len(first) // 3, worker=worker, isolation_level="read_committed")
    kill_inside_a_batch(worker, kafka_bootstrap)  # its open transaction holds outputs, not yet committed
    restarted = worker_factory(batch_size="16", processing_guarantee="exactly_once", commit_interval_s="0.3")
    restarted.env["SHIFTWATCH_APP_ID"] = worker.env["SHIFTWATCH_APP_ID"]
    restarted.env["SHIFTWATCH_DATA_DIR"] = worker.env["SHIFTWATCH_DATA_DIR"]
    restarted.start()
    produce(kafka_bootstrap, EVENTS.name, second)
    wanted = {json.loads(value)["event_id"] for _, value in stream}
    complete = lambda records: wanted <= {json.loads(r.value)["event_id"] for r in records}  # noqa: E731
    updates = consume(
        kafka_bootstrap, UPDATES.name, worker=restarted, until=complete, timeout=180, isolation_level="read_committed"
    )
    counts = Counter(json.loads(r.value)["event_id"] for r in updates)
    assert set(counts) == wanted and max(counts.values()) == 1, counts.most_common(3)
    check_every_event_has_its_exact_update(updates, stream_log, checkpoint)
    every = consume(kafka_bootstrap, UPDATES.name, len(updates), worker=restarted)  # aborted transactions too
    assert len(every) > len(updates), "the kill's aborted outputs are there, and read_committed skipped them"


@pytest.mark.kafka
def test_a_message_whose_admission_raises_is_dead_lettered_and_its_batch_goes_on(
    kafka_bootstrap, worker_factory, fresh_topics, stream_log
) -> None:
    """A row the worker cannot read (written to its changelog behind its back) makes admitting
    that user's events raise: each is dead-lettered as ``internal_error``, every other event
    of the same batches gets its update, and the worker never restarts."""
    stream = raw_messages(stream_log.first_users(6))
    victim = stream[0][0]
    changelog = f"{fresh_topics}-users-changelog"  # as the worker would create it at its first start
    asyncio.run(
        create_topic(kafka_bootstrap, NewTopic(changelog, PARTITIONS, 1, topic_configs=changelog_config(DAY_MS)))
    )
    produce_to(kafka_bootstrap, changelog, partition_of(victim), victim, b"{not a row")
    worker = worker_factory(batch_size="512").start()
    pid = worker.pid
    produce(kafka_bootstrap, EVENTS.name, stream)
    others = [(k, v) for k, v in stream if k != victim]
    updates = consume(kafka_bootstrap, UPDATES.name, len(others), worker=worker)
    assert sorted(json.loads(r.value)["event_id"] for r in updates) == sorted(
        json.loads(v)["event_id"] for _, v in others
    )
    victims = len(stream) - len(others)
    letters = [json.loads(r.value) for r in consume(kafka_bootstrap, INVALID.name, victims, worker=worker)]
    assert len(letters) == victims and {letter["reason"] for letter in letters} == {"internal_error"}
    assert letters[0]["detail"].startswith("RowFormatError")
    assert worker.pid == pid and not worker.exited() and "Traceback" not in worker.tail(10**7)
