"""The end-to-end benchmark's load: every event new to the worker, every user's history in time order."""

from __future__ import annotations

import json
from collections import defaultdict

from bench.e2e import Load
from tests.stream.helpers import taobao_users


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
