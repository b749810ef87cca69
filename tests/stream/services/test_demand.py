"""Inventory demand: the counting, and the service on the real broker behind a worker."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.cli.main import main
from stream.ops.process import WorkerProcess
from stream.services.demand_counts import CategoryMove, Demand, category_moves, top_movers
from tests.stream.conftest import consume, produce
from tests.stream.helpers import key_per_partition, raw_messages
from topics.client import decode
from topics.records import CategoryDemand
from topics.specs import DEMAND, EVENTS, SHIFTS

DAY_S = 86_400
TUMBLING_S, HOPPING_S, HOP_S = DAY_S, 2 * DAY_S, DAY_S // 2
GRACE_S = 3600  # the default, = the worker's lateness: however far apart partitions run, no shift is late
SHIFT_TOLERANCE = 1e-5  # per probability in a shift: the worker's batches and the offline run round differently


def demand_of(value: bytes) -> CategoryDemand:
    record = decode(DEMAND.name, value)
    assert isinstance(record, CategoryDemand)
    return record


def shift(shift_id: str, ts: int, out: dict[str, tuple[float, float]], into: dict[str, tuple[float, float]]) -> dict:
    changes = lambda moved: [{"category_id": c, "before": b, "after": a} for c, (b, a) in moved.items()]  # noqa: E731
    return {
        "shift_id": shift_id,
        "user_id": "u1",
        "ts": ts,
        "model_version": "v1",
        "from_categories": changes(out),
        "to_categories": changes(into),
    }


def test_a_shift_moves_mass_out_of_its_from_categories_into_its_to_categories() -> None:
    moves = category_moves(shift("s1", 5, {"a": (0.5, 0.25), "b": (0.25, 0.0)}, {"c": (0.0, 0.75)}))
    assert [(m.category_id, m.direction, m.mass) for m in moves] == [
        ("a", "out", 0.25),
        ("b", "out", 0.25),
        ("c", "in", 0.75),
    ]
    assert {m.shift_id for m in moves} == {"s1"} and {m.ts for m in moves} == {5}
    assert CategoryMove.loads(moves[0].dumps()) == moves[0]


def test_demand_sums_users_and_mass_in_and_out() -> None:
    demand = Demand()
    for move in category_moves(shift("s1", 0, {}, {"a": (0.0, 0.5)})) + category_moves(
        shift("s2", 0, {"a": (0.75, 0.5)}, {})
    ):
        demand = demand.add(move)
    assert demand == Demand(users_in=1, users_out=1, mass_gained=0.5, mass_lost=0.25)
    assert demand.as_dict() == {"users_in": 1, "users_out": 1, "mass_gained": 0.5, "mass_lost": 0.25, "net_mass": 0.25}
    assert Demand.from_row(demand.as_dict()) == demand


def test_top_movers_rank_by_net_mass_and_leave_out_the_unmoved() -> None:
    demand = {
        "a": Demand(1, 0, 0.5, 0.0),
        "b": Demand(2, 0, 0.5, 0.0),
        "c": Demand(0, 1, 0.0, 0.75),
        "d": Demand(1, 1, 0.25, 0.25),
    }
    rising, falling = top_movers(demand, 5)
    assert [c for c, _ in rising] == ["a", "b"] and [c for c, _ in falling] == ["c"]
    assert top_movers(demand, 1)[0] == [("a", demand["a"])]


def test_the_service_refuses_a_hop_that_does_not_divide_the_window(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SHIFTWATCH_DEMAND_HOP_S", "5000")
    assert main(["demand"]) == 2
    assert "SHIFTWATCH_DEMAND_HOP_S=5000 must divide SHIFTWATCH_DEMAND_HOPPING_S=604800" in capsys.readouterr().err


def window_starts(ts_ms: int, size_s: int, step_s: int) -> Iterable[int]:
    """Every window [start, start + size) holding ``ts_ms``, starts at multiples of the step."""
    size, step = size_s * 1000, step_s * 1000
    first = (ts_ms - size) // step * step + step
    return range(first, ts_ms + 1, step)


def expected_windows(shifts: Iterable[dict]) -> dict[str, dict]:
    """Every window's demand, worked out here from the shifts: ``demand_id`` -> record data."""
    windows: dict[str, dict] = {}
    for s in shifts:
        for changes, direction in ((s["from_categories"], "out"), (s["to_categories"], "in")):
            for change in changes:
                for kind, size, step in (("tumbling", TUMBLING_S, TUMBLING_S), ("hopping", HOPPING_S, HOP_S)):
                    for start in window_starts(s["ts"], size, step):
                        window = windows.setdefault(
                            f"{kind}:{change['category_id']}:{start}",
                            {
                                "category_id": change["category_id"],
                                "window": kind,
                                "window_start": start,
                                "window_end": start + size * 1000,
                                "users_in": 0,
                                "users_out": 0,
                                "mass_gained": 0.0,
                                "mass_lost": 0.0,
                            },
                        )
                        if direction == "in":
                            window["users_in"] += 1
                            window["mass_gained"] += change["after"] - change["before"]
                        else:
                            window["users_out"] += 1
                            window["mass_lost"] += change["before"] - change["after"]
    return windows


def get_json(service: WorkerProcess, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.web_port}{path}", timeout=5) as response:
        return json.loads(response.read())


def wait_for(service: WorkerProcess, check, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    stats: dict = {}
    while time.monotonic() < deadline:
        assert not service.exited(), service.tail()
        try:
            stats = get_json(service, "/demand/stats")
        except OSError:
            stats = {}
        if stats and check(stats):
            return stats
        time.sleep(0.5)
    raise AssertionError(f"timed out; last stats {stats}\n{service.tail()}")


@pytest.mark.kafka
@pytest.mark.parametrize("crash", [False, True], ids=["steady", "killed-and-restarted"])
def test_demand_windows_from_a_replayed_history_match_the_shifts(
    crash, kafka_bootstrap, worker_factory, stream_log, stream_shifts
) -> None:
    """With ``crash``, the service is killed (SIGKILL) halfway and a new one, on an empty
    store, recovers from the changelogs: the windows must come out the same (a window may be
    published again, under its id and with the same counts)."""
    shifts = list(stream_shifts.values())
    moves = sum(len(s["from_categories"]) + len(s["to_categories"]) for s in shifts)
    wanted = expected_windows(shifts)
    assert len({w["window"] for w in wanted.values()}) == 2 and len(wanted) > 100

    settings = {
        "demand_tumbling_s": TUMBLING_S,
        "demand_hopping_s": HOPPING_S,
        "demand_hop_s": HOP_S,
        "demand_grace_s": GRACE_S,
    }
    worker = worker_factory(batch_size="64").start()
    service = worker_factory(command=("demand",), batch_size="16", **settings).start()
    produce(kafka_bootstrap, EVENTS.name, raw_messages(stream_log))
    if crash:
        wait_for(service, lambda s: s["counted"] >= moves // 2)
        service.stop(kill=True)
        service = worker_factory(command=("demand",), batch_size="16", **settings).start()
    stats = wait_for(service, lambda s: s["counted"] >= moves)
    assert not worker.exited()
    assert stats["counted"] == moves and stats["late"] == {"tumbling": 0, "hopping": 0}
    if not crash:
        assert stats["moves"] == moves and stats["shifts"] == len(shifts)

    # top movers since the start, against the totals worked out here
    totals: dict[str, Demand] = defaultdict(Demand)
    for s in shifts:
        for move in category_moves(s):
            totals[move.category_id] = totals[move.category_id].add(move)
    answer = get_json(service, "/demand/top-movers?window=all&n=5")
    tolerance = SHIFT_TOLERANCE * moves
    for side, expected in zip(("rising", "falling"), top_movers(totals, 5)):
        assert len(answer[side]) == len(expected) == 5
        assert [m["net_mass"] for m in answer[side]] == pytest.approx([d.net_mass for _, d in expected], abs=tolerance)
        for mover in answer[side]:
            demand = totals[mover["category_id"]]
            assert (mover["users_in"], mover["users_out"]) == (demand.users_in, demand.users_out)
            assert mover["net_mass"] == pytest.approx(demand.net_mass, abs=tolerance)

    # a republished shift is not counted again; a shift far later in every shifts partition closes every window
    first = consume(kafka_bootstrap, SHIFTS.name, 1)[0]
    later = max(s["ts"] for s in shifts) + HOPPING_S * 1000 + GRACE_S * 1000
    flushes = [
        (
            user,
            json.dumps(
                {
                    **shifts[0],
                    "shift_id": f"flush-{user.decode()}",
                    "user_id": user.decode(),
                    "ts": later,
                    "from_categories": [],
                    "to_categories": [{"category_id": "flush", "before": 0.0, "after": 0.1}],
                }
            ).encode(),
        )
        for user in key_per_partition("flush").values()
    ]
    produce(kafka_bootstrap, SHIFTS.name, [(first.key, first.value), *flushes])
    distinct = lambda records: len({demand_of(r.value).demand_id for r in records})  # noqa: E731
    records = consume(
        kafka_bootstrap, DEMAND.name, worker=service, until=lambda records: distinct(records) >= len(wanted)
    )
    stats = get_json(service, "/demand/stats")
    assert stats["counted"] == moves + len(flushes)
    copies = len(category_moves(json.loads(first.value)))
    # after a crash, the new process also meets the moves fan_out sent again for the shifts it had not committed
    assert stats["duplicate_moves"] >= copies if crash else stats["duplicate_moves"] == copies

    published = [demand_of(r.value) for r in records]
    assert {p.demand_id for p in published} == set(wanted)
    if not crash:
        assert len(published) == len(wanted), "each window published once"
    for record, window in zip(records, published):
        want = wanted[window.demand_id]
        assert record.key.decode() == window.category_id
        assert (window.category_id, window.window, window.window_start, window.window_end) == (
            want["category_id"],
            want["window"],
            want["window_start"],
            want["window_end"],
        )
        assert (window.users_in, window.users_out) == (want["users_in"], want["users_out"])
        assert window.model_versions == [shifts[0]["model_version"]]
        tolerance = SHIFT_TOLERANCE * (window.users_in + window.users_out)
        assert window.mass_gained == pytest.approx(want["mass_gained"], abs=tolerance)
        assert window.mass_lost == pytest.approx(want["mass_lost"], abs=tolerance)
        assert window.net_mass == pytest.approx(want["mass_gained"] - want["mass_lost"], abs=tolerance)
    if not crash:
        assert stats["published"] == {
            kind: sum(w["window"] == kind for w in wanted.values()) for kind in ("tumbling", "hopping")
        }
        with urllib.request.urlopen(f"http://127.0.0.1:{service.web_port}/metrics", timeout=5) as response:
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.read().decode())
                for sample in family.samples
            }
        assert samples[("shiftwatch_demand_moves_total", ())] == moves + len(flushes)
        for kind, count in stats["published"].items():
            assert samples[("shiftwatch_demand_published_total", (("window", kind),))] == count
        assert any(name.startswith("faust_") for name, _ in samples), "Faust's sensor next to the service's counters"
    assert stats["open_windows"] == 1 + HOPPING_S // HOP_S, "the flush category's"
    current = get_json(service, "/demand/top-movers?window=tumbling")
    assert current["window_start"] == later - later % (TUMBLING_S * 1000) and not current["falling"]
    assert [(m["category_id"], m["users_in"]) for m in current["rising"]] == [("flush", len(flushes))]
