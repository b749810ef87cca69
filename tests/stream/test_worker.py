"""The worker against a real Kafka broker: updates, dead letters, duplicates, recovery."""

from __future__ import annotations

import base64
import json
import shutil
from collections import defaultdict

import pytest

from tests.stream.conftest import consume, produce
from tests.stream.helpers import assert_update_matches, event_value, offline_probabilities, raw_messages, same_update
from topics.specs import EVENTS, INVALID, UPDATES

pytestmark = pytest.mark.kafka

BAD_MESSAGES: list[tuple[bytes | None, bytes, str]] = [
    (b"u-bad", b"\xff\xfe not json at all", "not_json"),
    (b"u-bad", b"[1, 2, 3]", "not_object"),
    (b"u-bad", event_value(event_id="b1", user_id="u-bad", item_id="i", category_id="c", event_type="view"), "missing_field"),
    (b"u-bad", event_value(event_id="b2", user_id="u-bad", item_id=["i"], category_id="c", event_type="view", ts=1511540216000), "wrong_type"),
    (b"u-bad", event_value(event_id="b3", user_id="u-bad", item_id="i", category_id="c", event_type="teleport", ts=1511540216000), "unknown_event_type"),
    (b"u-bad", event_value(event_id="b4", user_id="u-bad", item_id="i", category_id="c", event_type="view", ts=42), "bad_timestamp"),
    (b"u-bad", event_value(event_id="b5", user_id="u-bad", item_id="i" * 5000, category_id="c", event_type="view", ts=1511540216000), "oversized"),
    (None, event_value(event_id="b6", user_id="u-bad", item_id="i", category_id="c", event_type="view", ts=1511540216000), "wrong_key"),
]  # fmt: skip


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
    reference = offline_probabilities(checkpoint, stream_log)
    for user, user_updates in by_user(updates).items():
        assert [u["sequence_length"] for u in user_updates] == list(range(1, len(user_updates) + 1))
        assert [u["event_id"] for u in user_updates] == [f"{user}:{i}" for i in range(len(user_updates))]
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


@pytest.mark.parametrize("crash", [True, False], ids=["killed", "stopped"])
def test_after_a_restart_the_table_is_recovered_from_its_changelog(
    kafka_bootstrap, worker_factory, stream_log, stream_checkpoint, crash
) -> None:
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)
    first, second = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    worker = worker_factory(batch_size="16").start()
    produce(kafka_bootstrap, EVENTS.name, first)
    if crash:  # SIGKILL mid-stream: some batches published, not committed, maybe half written
        consume(kafka_bootstrap, UPDATES.name, len(first) // 3, worker=worker)
    else:
        assert len(consume(kafka_bootstrap, UPDATES.name, len(first), worker=worker)) == len(first)
    worker.stop(kill=crash)
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
    latest: dict[str, dict] = {}
    for user, user_updates in by_user(updates).items():
        for update in user_updates:  # under at-least-once, a batch cut by the crash may appear twice, the same
            assert update["event_id"] == f"{user}:{update['sequence_length'] - 1}", update
            previous = latest.get(update["event_id"])
            if previous is not None:
                assert same_update(previous, update), json.dumps([previous, update])
            latest[update["event_id"]] = update
            assert_update_matches(update, checkpoint, reference[user])
    assert set(latest) == wanted, (sorted(wanted - set(latest))[:20], sorted(set(latest) - wanted)[:20])
    if not crash:
        assert len(updates) == len(stream), "a clean stop commits everything it published"
