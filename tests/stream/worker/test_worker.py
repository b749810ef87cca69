"""The worker against a real Kafka broker: updates, shifts, dead letters, duplicates, recovery."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model.online.detector import ShiftDetector
from stream.settings import Settings
from stream.worker.pipeline import InterestPipeline
from tests.stream.conftest import consume, kill_inside_a_batch, produce, recreate_topics
from tests.stream.helpers import (
    SMALL_MODEL_DETECTOR,
    assert_update_matches,
    event_value,
    offline_probabilities,
    offline_shifts,
    positions,
    raw_messages,
    run_pipeline,
    same_shift,
    same_update,
    spliced_history,
    taobao_users,
    wait_committed_to_end,
    wait_ready,
)
from topics.specs import EVENTS, INVALID, SHIFTS, UPDATES

pytestmark = pytest.mark.kafka

BAD_MESSAGES: list[tuple[bytes | None, bytes, str]] = [
    (b"u-bad", b"\xff\xfe not json at all", "not_json"),
    (b"u-bad", b"[1, 2, 3]", "not_object"),
    (
        b"u-bad",
        event_value(event_id="b1", user_id="u-bad", item_id="i", category_id="c", event_type="view"),
        "missing_field",
    ),
    (
        b"u-bad",
        event_value(
            event_id="b2", user_id="u-bad", item_id=["i"], category_id="c", event_type="view", ts=1511540216000
        ),
        "wrong_type",
    ),
    (
        b"u-bad",
        event_value(
            event_id="b3", user_id="u-bad", item_id="i", category_id="c", event_type="teleport", ts=1511540216000
        ),
        "unknown_event_type",
    ),
    (
        b"u-bad",
        event_value(event_id="b4", user_id="u-bad", item_id="i", category_id="c", event_type="view", ts=42),
        "bad_timestamp",
    ),
    (
        b"u-bad",
        event_value(
            event_id="b5", user_id="u-bad", item_id="i" * 5000, category_id="c", event_type="view", ts=1511540216000
        ),
        "oversized",
    ),
    (
        None,
        event_value(event_id="b6", user_id="u-bad", item_id="i", category_id="c", event_type="view", ts=1511540216000),
        "wrong_key",
    ),
]


def by_user(records: list) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        update = json.loads(record.value)
        assert record.key.decode() == update["user_id"]
        grouped[update["user_id"]].append(update)
    return grouped


def test_replayed_events_give_one_exact_update_each_and_bad_ones_go_to_dead_letters(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint
) -> None:
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    last_of_each_user = {key: (key, value) for key, value in stream}
    duplicates = list(last_of_each_user.values())  # the same events again, as an at-least-once producer sends
    mixed = stream[:100] + [(k, v) for k, v, _ in BAD_MESSAGES] + stream[100:] + duplicates
    worker = worker_factory(batch_size="64").start()
    produce(kafka_bootstrap, EVENTS.name, mixed)

    updates = consume(kafka_bootstrap, UPDATES.name, len(stream), worker=worker)
    assert len(updates) == len(stream), "one update per accepted event, none for duplicates"
    where = positions(stream)
    reference = offline_probabilities(checkpoint, stream_log)
    for user, user_updates in by_user(updates).items():
        assert [u["sequence_length"] for u in user_updates] == list(range(1, len(user_updates) + 1))
        assert [where[u["event_id"]] for u in user_updates] == [(user, i) for i in range(len(user_updates))]
        for update in user_updates:
            assert update["model_version"] == checkpoint.model_version
            assert_update_matches(update, checkpoint, reference[user])

    letters = consume(kafka_bootstrap, INVALID.name, len(BAD_MESSAGES), worker=worker)
    reasons = sorted(json.loads(r.value)["reason"] for r in letters)
    assert reasons == sorted(reason for _, _, reason in BAD_MESSAGES), "each bad event exactly once"
    for record in letters:
        letter = json.loads(record.value)
        original = base64.b64decode(letter["original_base64"])
        assert original in [value for _, value, _ in BAD_MESSAGES]
        assert letter["source_topic"] == EVENTS.name and letter["source_offset"] >= 0

    expected = offline_shifts(checkpoint, stream)
    assert expected, "the sample should hold shifts"
    shifts = [json.loads(r.value) for r in consume(kafka_bootstrap, SHIFTS.name, len(expected), worker=worker)]
    assert sorted(s["shift_id"] for s in shifts) == sorted(expected), "each shift once, none for duplicates"
    assert all(same_shift(s, expected[s["shift_id"]]) for s in shifts)

    metrics = scrape(worker.web_port)
    assert metrics[("shiftwatch_events_total", (("outcome", "accepted"),))] == len(stream)
    assert metrics[("shiftwatch_events_total", (("outcome", "duplicate"),))] == len(duplicates)
    assert metrics[("shiftwatch_events_total", (("outcome", "invalid"),))] == len(BAD_MESSAGES)
    for reason in {reason for _, _, reason in BAD_MESSAGES}:
        count = sum(r == reason for _, _, r in BAD_MESSAGES)
        assert metrics[("shiftwatch_dead_letters_total", (("reason", reason),))] == count
    assert metrics[("shiftwatch_updates_published_total", ())] == len(stream)
    assert metrics[("shiftwatch_shifts_published_total", ())] == len(expected)
    assert sum(v for (name, _), v in metrics.items() if name == "shiftwatch_shift_flows_total") == len(expected)
    assert metrics[("shiftwatch_ingest_to_publish_seconds_count", ())] == len(stream)
    assert metrics[("shiftwatch_cache_hits_total", ())] + metrics[("shiftwatch_cache_misses_total", ())] + metrics[
        ("shiftwatch_cache_first_events_total", ())
    ] == len(stream)
    assert metrics[("shiftwatch_active_users", ())] == len(stream_log.users)
    assert metrics[("shiftwatch_table_rows", ())] == len(stream_log.users)  # first counted at this scrape
    assert sum(v for (name, _), v in metrics.items() if name == "shiftwatch_consumer_lag") == 0
    assert metrics[("shiftwatch_input_messages_total", (("topic", EVENTS.name),))] >= len(mixed)  # read in bulk
    assert sum(wait_committed_to_end(kafka_bootstrap, worker.env["SHIFTWATCH_APP_ID"], EVENTS.name).values()) == len(
        mixed
    )
    assert any(name.startswith("faust_") for name, _ in metrics), "Faust's own sensor, same registry"
    status, ready = get_json(worker.web_port, "/readyz")
    assert status == 200 and ready["ready"] is True and ready["model_version"] == checkpoint.model_version
    assert ready["detector_calibrated"] == "no" and "uncalibrated" in ready["warnings"][0]  # said loudly
    assert "uncalibrated" in worker.log.read_text()

    # user queries: answered from the user's row
    last_shift = {s["user_id"]: s for s in sorted(expected.values(), key=lambda s: s["sequence_length"])}
    for user in stream_log.users[:4]:
        status, body = get_json(worker.web_port, f"/users/{user.user_id}/interests")
        assert status == 200 and body["events"] == len(user)
        probabilities = [c["probability"] for c in body["interests"]]
        assert probabilities and probabilities == sorted(probabilities, reverse=True)
        if user.user_id in last_shift:
            latest = body["last_shift"]
            assert latest == body["shifts"][-1]
            assert latest["shift_id"] == last_shift[user.user_id]["shift_id"]
            assert latest["to"] == [c["category_id"] for c in last_shift[user.user_id]["to_categories"]]
            assert len(body["shifts"]) <= 5
        else:
            assert body["shifts"] == [] and body["last_shift"] is None
    assert get_json(worker.web_port, "/users/nobody/interests")[0] == 404
    status, body = get_json(worker.web_port, "/shifts/recent?limit=3")
    assert status == 200 and len(body["shifts"]) == min(3, len(expected))
    assert {s["shift_id"] for s in body["shifts"]} <= set(expected)
    assert get_json(worker.web_port, "/shifts/recent?limit=x")[0] == 400


def test_three_workers_share_twelve_partitions(kafka_bootstrap, worker_factory, stream_log) -> None:
    """Three workers on topics of twelve partitions (``SHIFTWATCH_PARTITIONS``): once the group
    has settled, every partition is owned by one of them and each owns some; every event gets
    its update exactly once; asked about any user, each worker answers with that user's row
    (the owner serves it, the others forward the request to the owner)."""
    partitions = 12
    recreate_topics(kafka_bootstrap, partitions)
    stream = raw_messages(stream_log)
    workers = [worker_factory(batch_size="64", partitions=str(partitions)).start() for _ in range(3)]
    urls = {f"http://127.0.0.1:{w.web_port}" for w in workers}
    for worker in workers:
        wait_ready(worker.web_port)

    def owners() -> dict[str, list[int]]:
        status, routes = get_json(workers[0].web_port, "/router/")  # Faust's view: worker URL -> table partitions
        assert status == 200
        return {url: sorted(p for ps in tables.values() for p in ps) for url, tables in routes.items()}

    deadline = time.monotonic() + 120
    while {url for url, owned in owners().items() if owned} != urls and time.monotonic() < deadline:
        time.sleep(1)
    owned = owners()
    assert sorted(p for ps in owned.values() for p in ps) == list(range(partitions))
    assert {url for url, ps in owned.items() if ps} == urls
    produce(kafka_bootstrap, EVENTS.name, stream)
    updates = consume(kafka_bootstrap, UPDATES.name, len(stream), worker=workers[0])
    events = [json.loads(value)["event_id"] for _, value in stream]
    assert sorted(json.loads(u.value)["event_id"] for u in updates if u.value is not None) == sorted(events)
    assert owners() == owned, "no rebalance while the events went through"
    for user in stream_log.users:
        answers = [get_json(worker.web_port, f"/users/{user.user_id}/interests") for worker in workers]
        assert answers[0] == answers[1] == answers[2]
        assert answers[0][0] == 200 and answers[0][1]["events"] == len(user)


def get_json(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics, as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_spliced_history_through_the_broker_yields_its_shift(
    kafka_bootstrap, worker_factory, stream_checkpoint
) -> None:
    checkpoint, _ = stream_checkpoint
    spliced = spliced_history(taobao_users(60))
    worker = worker_factory(batch_size="8").start()
    stream = raw_messages(spliced.log)
    produce(kafka_bootstrap, EVENTS.name, stream)
    records = consume(kafka_bootstrap, SHIFTS.name, 1, worker=worker)
    assert len(records) == 1
    assert records[0].key == spliced.log.users[0].user_id.encode()
    shift = json.loads(records[0].value)
    assert spliced.seam <= shift["sequence_length"] - 1 <= spliced.seam + 10, "within the tolerance"
    assert spliced.before in [c["category_id"] for c in shift["from_categories"]]
    assert spliced.after in [c["category_id"] for c in shift["to_categories"]]
    assert shift["evidence"] and shift["model_version"] == checkpoint.model_version
    (expected,) = offline_shifts(checkpoint, stream).values()
    assert same_shift(shift, expected)


@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
def test_after_a_restart_the_table_is_recovered_from_its_changelog(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint, crash
) -> None:
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    first, second = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    worker = worker_factory(batch_size="16").start()
    produce(kafka_bootstrap, EVENTS.name, first)
    if crash:  # SIGKILL mid-stream: a batch published, not committed, maybe half written
        consume(kafka_bootstrap, UPDATES.name, len(first) // 3, worker=worker)
        kill_inside_a_batch(worker, kafka_bootstrap)
    else:
        assert len(consume(kafka_bootstrap, UPDATES.name, len(first), worker=worker)) == len(first)
        worker.stop()
    # A new machine: the local RocksDB is gone, only the changelog is left.
    shutil.rmtree(worker.env["SHIFTWATCH_DATA_DIR"])

    restarted = worker_factory()
    restarted.env["SHIFTWATCH_APP_ID"] = worker.env["SHIFTWATCH_APP_ID"]
    restarted.start()
    produce(kafka_bootstrap, EVENTS.name, second)
    wanted = {json.loads(v)["event_id"] for _, v in stream}

    def complete(records: list) -> bool:
        return wanted <= {json.loads(r.value)["event_id"] for r in records}

    updates = consume(kafka_bootstrap, UPDATES.name, worker=restarted, until=complete)
    reference = offline_probabilities(checkpoint, stream_log)
    where = positions(stream)
    latest: dict[str, dict] = {}
    for user, user_updates in by_user(updates).items():
        for update in user_updates:  # under at-least-once, a batch cut by the crash may appear twice, the same
            assert where[update["event_id"]] == (user, update["sequence_length"] - 1), update
            previous = latest.get(update["event_id"])
            if previous is not None:
                assert same_update(previous, update), json.dumps([previous, update])
            latest[update["event_id"]] = update
            assert_update_matches(update, checkpoint, reference[user])
    assert set(latest) == wanted, (sorted(wanted - set(latest))[:20], sorted(set(latest) - wanted)[:20])
    if not crash:
        assert len(updates) == len(stream), "a clean stop commits everything it published"

    # The final table state is a crash-free run's: every row's events, interests and profile.
    pipeline = InterestPipeline(checkpoint, Settings(), ShiftDetector(SMALL_MODEL_DETECTOR))
    offline_states = run_pipeline(pipeline, stream, batch_size=64)[2]
    for user in stream_log.users:
        status, row = get_json(restarted.web_port, f"/users/{user.user_id}/interests")
        state = offline_states[user.user_id.encode()]
        assert status == 200 and row["events"] == state.length == len(user)
        for field, distribution in (("interests", state.detector.previous), ("profile", state.detector.long)):
            assert {c["category_id"]: c["probability"] for c in row[field]} == pytest.approx(distribution, abs=1e-5), (
                field
            )

    # The detectors' states came back with the rows: the same shifts as a crash-free run,
    # a redelivered batch's shift republished under the same id.
    expected = offline_shifts(checkpoint, stream)
    wanted_shifts = set(expected)

    def all_shifts(records: list) -> bool:
        return wanted_shifts <= {json.loads(r.value)["shift_id"] for r in records}

    shifts = [json.loads(r.value) for r in consume(kafka_bootstrap, SHIFTS.name, worker=restarted, until=all_shifts)]
    assert {s["shift_id"] for s in shifts} == wanted_shifts
    assert all(same_shift(s, expected[s["shift_id"]]) for s in shifts)
    if not crash:
        assert len(shifts) == len(wanted_shifts)
