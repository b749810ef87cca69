"""Privacy: pseudonymous ids before anything is stored, and ``shiftwatch forget`` on the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from stream.cli.main import main
from stream.ops.admin import create_topics
from stream.runtime.durable import ROLL_KEY
from stream.settings import Settings
from stream.worker.pipeline import InterestPipeline
from stream.worker.privacy import Pseudonymiser
from stream.worker.rows import decode_row, encode_row
from tests.stream.conftest import consume, produce, read_all
from tests.stream.helpers import NOW_MS, PARTITIONS, event_value, raw_messages, run_pipeline, spliced_history
from tests.stream.worker.test_worker import get_json, scrape
from topics.specs import EVENTS, UPDATES

SECRET = "a-test-secret"


def test_pseudonymised_outputs_and_rows_hold_no_raw_ids(stream_log, stream_checkpoint) -> None:
    checkpoint, _ = stream_checkpoint
    stream = raw_messages(stream_log)[:600]
    plain = run_pipeline(InterestPipeline(checkpoint, Settings()), stream, batch_size=64)
    hidden = run_pipeline(InterestPipeline(checkpoint, Settings(pseudonym_key=SECRET)), stream, batch_size=64)
    raw_users = {key.decode() for key, _ in stream}
    published = json.dumps([*hidden[0], *hidden[3]])
    rows = json.dumps(
        [dataclasses.asdict(decode_row(encode_row(state))) for state in hidden[2].values()]
    )  # all a row holds
    for user in raw_users:
        assert f'"{user}"' not in published and f'"{user}:' not in published, (
            user
        )  # user ids, and event ids built from them
        assert f'"{user}:' not in rows, user
    assert {u["user_id"][:2] for u in hidden[0]} == {"u-"} and {u["event_id"][:2] for u in hidden[0]} == {"e-"}
    # the same interests, under other names
    assert [u["top_categories"] for u in hidden[0]] == [u["top_categories"] for u in plain[0]]
    assert len({u["user_id"] for u in hidden[0]}) == len(raw_users)


def test_dead_letters_under_pseudonymisation_carry_no_raw_id(stream_checkpoint) -> None:
    checkpoint, _ = stream_checkpoint
    pipeline = InterestPipeline(checkpoint, Settings(pseudonym_key=SECRET))
    alice = "alice-7f3c9"
    value = event_value(
        event_id=f"{alice}:0", user_id=alice, item_id="i", category_id="c", event_type="view", ts=1_511_600_000_000
    )
    refused = pipeline.check(value, b"bob-the-key", 0, 7, NOW_MS)
    letter = refused.dead_letter  # type: ignore[union-attr]
    text = letter.dumps()
    assert letter.reason == "wrong_key" and letter.user_id == Pseudonymiser(SECRET.encode()).user(alice)
    assert b"alice" not in text and b"bob" not in text, text
    assert letter.original_base64 == "" and letter.original_sha256 is None and letter.original_size == len(value)
    error = pipeline.internal_error(value, 0, 8, KeyError(alice))
    assert error.detail == "KeyError" and b"alice" not in error.dumps()
    plain = InterestPipeline(checkpoint, Settings()).internal_error(value, 0, 8, KeyError(alice))
    assert alice in plain.detail, "without pseudonymisation the detail helps debugging"


def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


ERASURE_DEADLINE_S = 40  # the input is kept half of it: enough for a worker on a loaded CI machine


def records_naming(bootstrap: str, topics: list[str], names: list[bytes]) -> dict[str, int]:
    """Per topic, the records (tombstones aside) whose key or value holds one of ``names``,
    read from the beginning of every partition."""
    found = {}
    for topic in topics:
        records = read_all(bootstrap, topic)
        hits = sum(1 for r in records if r.value is not None and any(n in (r.key or b"") + r.value for n in names))
        if hits:
            found[topic] = hits
    return found


def all_topics(bootstrap: str) -> list[str]:
    async def listed() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        finally:
            await admin.close()

    return asyncio.run(listed())


@pytest.mark.kafka
def test_forget_erases_a_user_everywhere_within_the_deadline(
    kafka_bootstrap, worker_factory, fresh_topics, stream_log, tmp_path
) -> None:
    """With an erasure deadline of seconds, a forgotten user is gone from every topic and
    changelog within it: read from the beginning, nothing names her but tombstones. The web API
    answers for her as for a user it never saw."""
    alice = "alice-7f3c9"
    hidden = Pseudonymiser(SECRET.encode()).user(alice).encode()
    spliced = spliced_history(stream_log)  # a real history with a shift in it, so that a trigger fires for her
    history = []
    for _, value in raw_messages(spliced.log):
        event = json.loads(value)
        history.append((alice.encode(), json.dumps({**event, "user_id": alice}).encode()))
    stream = raw_messages(stream_log.first_users(5)) + history
    asyncio.run(
        create_topics(kafka_bootstrap, ERASURE_DEADLINE_S, PARTITIONS)
    )  # the topics of fresh_topics, under the test's deadline
    deadline = {"erasure_deadline_s": ERASURE_DEADLINE_S, "pseudonym_key": SECRET}
    worker = worker_factory(**deadline).start()
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "any"\n')
    triggers = worker_factory(command=("triggers", "--rules", str(rules)), **deadline).start()
    produce(kafka_bootstrap, EVENTS.name, stream)
    published = lambda records: sum(r.value is not None for r in records) >= len(stream)  # noqa: E731
    updates = [r for r in consume(kafka_bootstrap, UPDATES.name, worker=worker, until=published) if r.key != ROLL_KEY]
    assert len(updates) == len(stream)
    assert not any(alice.encode() in (u.key or b"") + u.value for u in updates), "no raw id published"
    mine = [json.loads(u.value) for u in updates if u.key == hidden]
    assert len(mine) == len(history)
    status, interests = get_json(worker.web_port, f"/users/{alice}/interests")
    assert status == 200 and interests["events"] == len(history) and interests["user_id"] == hidden.decode()
    trigger_rows = f"{fresh_topics}-triggers-trigger_state-changelog"
    wait_until(
        lambda: (
            trigger_rows in all_topics(kafka_bootstrap) and records_naming(kafka_bootstrap, [trigger_rows], [hidden])
        )
    )

    assert main(["forget", alice, "--bootstrap", kafka_bootstrap]) == 0
    wait_until(lambda: get_json(worker.web_port, f"/users/{alice}/interests")[0] == 404)
    tombstoned = lambda records: any(r.key == hidden and r.value is None for r in records)  # noqa: E731
    records = consume(kafka_bootstrap, UPDATES.name, worker=worker, until=tombstoned)
    assert [r.value for r in records if r.key == hidden][-1] is None, "a tombstone replaces her last update"
    assert scrape(worker.web_port)[("shiftwatch_users_forgotten_total", ())] == 1
    wait_until(lambda: get_json(triggers.web_port, "/triggers/stats")[1]["forgotten"] == 1)
    never_seen = get_json(worker.web_port, "/users/nobody-at-all/interests")
    assert get_json(worker.web_port, f"/users/{alice}/interests") == never_seen and never_seen[0] == 404, "no oracle"

    topics = all_topics(kafka_bootstrap)
    assert {f"{fresh_topics}-users-changelog", f"{fresh_topics}-triggers-trigger_state-changelog"} <= set(topics)
    assert records_naming(kafka_bootstrap, topics, [alice.encode(), hidden]), "she is there before the deadline"
    forgotten_at = time.monotonic()
    while found := records_naming(kafka_bootstrap, topics, [alice.encode(), hidden]):
        print(f"{time.monotonic() - forgotten_at:.1f} s: {found}")
        assert time.monotonic() - forgotten_at < ERASURE_DEADLINE_S, f"still there after the deadline: {found}"
        time.sleep(2)
    erased_after = time.monotonic() - forgotten_at
    rolls = [r for r in read_all(kafka_bootstrap, UPDATES.name) if r.key == ROLL_KEY]
    assert rolls and all(r.value is None for r in rolls), "quiet partitions get their segments rolled"
    print(f"erased from {len(topics)} topics {erased_after:.1f} s after the forget (deadline {ERASURE_DEADLINE_S} s)")

    # she comes back as a new user: her first event gives her first update again (the only one of hers there is)
    produce(kafka_bootstrap, EVENTS.name, history[:1])
    returned = lambda records: any(r.key == hidden and r.value is not None for r in records)  # noqa: E731
    records = consume(kafka_bootstrap, UPDATES.name, worker=worker, until=returned)
    again = json.loads([r.value for r in records if r.key == hidden][-1])
    assert again["sequence_length"] == 1 and again["top_categories"] == mine[0]["top_categories"]
    for process in (worker, triggers):
        assert alice not in process.tail(10**7), f"{process.command[0]} logged a raw user id (log level info)"
