"""``shiftwatch triggers``: marketing triggers from interest shifts, by declarative rules.

A Faust app of its own (consumer group ``<app id>-triggers``): it reads ``interest.shifts``,
applies the rules (:mod:`stream.rules`) with each user's rate-limit state from the
``trigger_state`` table (changelog-backed, co-partitioned with the shifts: both are keyed by
user), and publishes ``marketing.triggers``. Delivery is at-least-once: a shift processed
twice yields its triggers under the same ids, which consumers deduplicate on. A message that
is not a shift goes to the dead-letter topic (reason ``not_a_shift``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import faust

from stream.rules import Rule, evaluate
from stream.settings import Settings
from topics.records import DeadLetter, InterestShift
from topics.specs import INVALID, PARTITIONS, SHIFTS, TRIGGERS


def create_triggers_app(settings: Settings, rules: Sequence[Rule]) -> faust.App:
    datadir = settings.data_dir / "triggers"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_id}-triggers",
        broker=settings.kafka_url,
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=PARTITIONS,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_port=settings.web_port,
        web_host="127.0.0.1",
    )
    shifts_topic = app.topic(SHIFTS.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state = app.Table("trigger_state", partitions=PARTITIONS, key_type=bytes, value_type=bytes, help="user -> rule -> last trigger ts")
    counts = {"shifts": 0, "triggers": 0, "unreadable": 0}

    @app.agent(shifts_topic)
    async def fire(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                shift = json.loads(message.value)
                InterestShift.from_data(shift)  # the contract: every field there
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                counts["unreadable"] += 1
                letter = DeadLetter(
                    reason="not_a_shift", detail=str(error)[:200], source_topic=SHIFTS.name,
                    source_partition=message.partition, source_offset=message.offset,
                    original_base64=base64.b64encode(message.value or b"").decode(),
                )  # fmt: skip
                await (await app.producer.send(INVALID.name, message.key, letter.dumps(), partition=None, timestamp=None, headers=None))
                continue
            user = str(shift["user_id"])
            counts["shifts"] += 1
            key = user.encode()
            raw = state.get(key)
            fired: dict[str, int] = json.loads(raw) if raw else {}
            triggers = evaluate(rules, shift, fired)
            for trigger in triggers:
                value = json.dumps(trigger, separators=(",", ":")).encode()
                await (await app.producer.send(TRIGGERS.name, key, value, partition=None, timestamp=None, headers=None))
                counts["triggers"] += 1
            if triggers:
                state[key] = json.dumps(fired, separators=(",", ":")).encode()

    @app.page("/triggers/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json({**counts, "rules": [rule.name for rule in rules]})

    return app
