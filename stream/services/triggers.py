"""``shiftwatch triggers``: marketing triggers from interest shifts, by declarative rules.

A Faust app of its own (consumer group ``<app id>-triggers``): it reads ``interest.shifts``,
applies the rules (:mod:`stream.services.rules`) with each user's rate-limit state from the
``trigger_state`` table (changelog-backed, co-partitioned with the shifts: both are keyed by
user), and publishes ``marketing.triggers``. A tombstone on ``interest.shifts`` (the worker's,
when it forgets a user, keyed like the user's shifts and so in the partition of their row)
deletes the user's row; a batch's rate-limit rows are written only after
its triggers are on Kafka (:mod:`stream.runtime.durable`). Delivery is at-least-once: a shift
processed twice yields its triggers under the same ids, which consumers deduplicate on. A message that
is not a shift goes to the dead-letter topic (reason ``not_a_shift``, :mod:`stream.services.downstream`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import faust

from stream.runtime.app import new_user_table
from stream.runtime.durable import PendingRows, schedule_segment_rolls
from stream.services.downstream import Stats, downstream_app, shift_batches, shifts_topic
from stream.services.rules import Rule, evaluate
from stream.settings import Settings
from topics.specs import SHIFTS, TRIGGERS

HELP = {
    "shifts": "Interest shifts read",
    "unreadable": "Messages on interest.shifts that are not shifts (dead-lettered as not_a_shift)",
    "forgotten": "Forget requests carried out (the user's rate-limit row deleted)",
    "fired": "Marketing triggers published, by rule",
}


def create_triggers_app(settings: Settings, rules: Sequence[Rule]) -> faust.App:
    stats: Stats = {"shifts": 0, "unreadable": 0, "forgotten": 0, "fired": {rule.name: 0 for rule in rules}}
    app = downstream_app(settings, "triggers", stats, HELP, {"fired": "rule"})
    state = new_user_table(app, "trigger_state", settings, "user -> rule -> last trigger ts")

    schedule_segment_rolls(app, state, SHIFTS.name, settings.erasure_deadline_s)

    @app.agent(shifts_topic(app))
    async def fire(stream: faust.StreamT) -> None:
        async for batch in shift_batches(app, stream, settings, stats):
            rows = PendingRows()
            sent = []
            for event, shift in batch:
                if shift is None:  # the user was forgotten
                    rows.set(state, event, event.message.key or b"", None)
                    stats["forgotten"] += 1
                    continue
                key = str(shift["user_id"]).encode()
                raw = rows.get(state, event, key)
                fired: dict[str, int] = json.loads(raw) if raw else {}
                triggers = evaluate(rules, shift, fired)
                for trigger in triggers:
                    value = json.dumps(trigger, separators=(",", ":")).encode()
                    sent.append(
                        await app.producer.send(TRIGGERS.name, key, value, partition=None, timestamp=None, headers=None)
                    )
                    stats["fired"][trigger["rule"]] += 1
                if triggers:
                    rows.set(state, event, key, json.dumps(fired, separators=(",", ":")).encode())
            await asyncio.gather(*sent)
            await rows.write(app)

    @app.page("/triggers/stats")
    async def stats_page(web: Any, request: Any) -> Any:
        return web.json(stats)

    return app
