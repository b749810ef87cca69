"""Marketing triggers: rules files, and the service on the real broker behind a worker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from stream.cli.main import main
from stream.services.rules import HOUR_MS, RuleError, parse_rules, trigger_id
from tests.conftest import ROOT
from tests.stream.conftest import consume, produce
from tests.stream.helpers import raw_messages
from topics.client import DecodeError, OutputConsumer, decode
from topics.records import InterestShift, MarketingTrigger
from topics.specs import EVENTS, SHIFTS, TRIGGERS


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no [[rule]] tables"),
        ("[[rule]]\nname = 'a'\n[[rule]]\nname = 'a'\n", "duplicate rule names ['a']"),
        ("[[rule]]\nname = 'a'\ncooldown = 3\n", "unknown keys ['cooldown']"),
        ("[[rule]]\nname = 'a b'\n", "'name' must be"),
        ("[[rule]]\nname = 'a'\nto_categories = 'shoes'\n", "'to_categories' must be a non-empty list"),
        ("[[rule]]\nname = 'a'\ncooldown_hours = -1\n", "'cooldown_hours' must be a number >= 0"),
        ("[[rule]]\nname = 'a'\nmin_confidence = true\n", "'min_confidence' must be a number from 0 to 1"),
        ("[[rule]\nname = 'a'\n", "not valid TOML"),
        ("[[rules]]\nname = 'a'\n", "unknown top-level keys ['rules']"),
    ],
)
def test_bad_rule_files_are_refused_with_a_clear_message(text: str, complaint: str) -> None:
    with pytest.raises(RuleError, match=None) as error:
        parse_rules(text, "rules.toml")
    assert str(error.value).startswith("rules.toml: ") and complaint in str(error.value)


def test_the_service_refuses_a_bad_rules_file_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text("[[rule]]\nname = 'x'\nmin_confidence = 1.5\n")
    assert main(["triggers", "--rules", str(bad)]) == 2
    assert "rules.toml: rule 1 (x): 'min_confidence' must be a number from 0 to 1" in capsys.readouterr().err


def test_the_shipped_rules_parse() -> None:
    path = ROOT / "deploy" / "triggers.toml"
    assert [rule.name for rule in parse_rules(path.read_text(), str(path))] == ["new-interest", "into-top-categories"]


def expected_triggers(shifts: list[dict], target: str, cooldown_hours: float) -> set[tuple[str, str]]:
    """(rule, shift id) of every trigger, worked out here from the shifts: rule ``any`` fires
    on a user's shift unless it fired for that user less than ``cooldown_hours`` of event time
    before; rule ``into-target`` on every shift that gains ``target``."""
    wanted = set()
    by_user = defaultdict(list)
    for shift in shifts:
        by_user[shift["user_id"]].append(shift)
    for user_shifts in by_user.values():
        last = None
        for shift in sorted(user_shifts, key=lambda s: s["sequence_length"]):
            if last is None or shift["ts"] - last >= cooldown_hours * HOUR_MS:
                wanted.add(("any", shift["shift_id"]))
                last = shift["ts"]
            if target in {c["category_id"] for c in shift["to_categories"]}:
                wanted.add(("into-target", shift["shift_id"]))
    return wanted


@pytest.mark.kafka
def test_triggers_from_a_replayed_history_match_the_rules(
    kafka_bootstrap, worker_factory, stream_log, stream_shifts, tmp_path
) -> None:
    stream = raw_messages(stream_log)
    shifts = list(stream_shifts.values())
    target = Counter(s["to_categories"][0]["category_id"] for s in shifts).most_common(1)[0][0]
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[[rule]]\nname = "any"\ncooldown_hours = 2\n\n[[rule]]\nname = "into-target"\nto_categories = ["{target}"]\ncooldown_hours = 0\n'
    )
    wanted = expected_triggers(shifts, target, cooldown_hours=2)
    assert len(wanted) > 0 and {rule for rule, _ in wanted} == {"any", "into-target"}

    worker = worker_factory(batch_size="64").start()
    service = worker_factory(command=("triggers", "--rules", str(rules))).start()
    produce(kafka_bootstrap, EVENTS.name, stream)
    records = consume(kafka_bootstrap, TRIGGERS.name, len(wanted), worker=service)
    assert not worker.exited()
    triggers = [json.loads(r.value) for r in records]
    assert {(t["rule"], t["shift_id"]) for t in triggers} == wanted
    assert len(triggers) == len(wanted), "one trigger per rule and shift"
    for record, trigger in zip(records, triggers):
        assert record.key.decode() == trigger["user_id"]
        assert trigger["trigger_id"] == trigger_id(trigger["rule"], trigger["shift_id"])
        if trigger["rule"] == "into-target":
            assert trigger["to_categories"] == [target]

    # the typed client reads both outputs as records
    async def read() -> list:
        received = []
        async with OutputConsumer(kafka_bootstrap, [SHIFTS.name, TRIGGERS.name]) as consumer:
            async for message in consumer:
                received.append(message)
                if len(received) == len(shifts) + len(wanted):
                    return received
        return received

    received = asyncio.run(asyncio.wait_for(read(), timeout=60))
    kinds = Counter(type(m.record) for m in received)
    assert kinds == {InterestShift: len(shifts), MarketingTrigger: len(wanted)}
    assert all(m.key == m.record.user_id for m in received)


def test_the_client_refuses_what_is_not_a_record() -> None:
    with pytest.raises(DecodeError, match="not a ShiftWatch output topic"):
        decode("clickstream.events", b"{}")
    with pytest.raises(DecodeError, match="not a valid MarketingTrigger"):
        decode(TRIGGERS.name, b'{"trigger_id": "t"}')
