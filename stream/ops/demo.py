"""``shiftwatch demo``: the whole service on the embedded broker and the shipped data.

Starts Apache Kafka (unless ``KAFKA_BOOTSTRAP`` is set), creates the topics, trains a
small model when no checkpoint exists and tunes its shift detector when it has none,
starts a worker and the two downstream services (``shiftwatch triggers`` with
``deploy/triggers.toml``, ``shiftwatch demand``), replays the Taobao sample into the input
topic, prints a live feed of interest shifts, ends with a summary (the categories that
gained and lost most interest, the triggers fired, the demand windows published), then
stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from model.data.loaders import EventLog, load_event_log
from stream.ops.admin import create_topics
from stream.ops.broker import EmbeddedBroker
from stream.ops.process import WorkerProcess
from stream.ops.replay import replay
from stream.settings import Settings
from topics.specs import INVALID, SHIFTS, UPDATES


@dataclass(frozen=True)
class DemoConfig:
    data: Path = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
    checkpoint: Path = Path("checkpoints/taobao")
    state_dir: Path = Path(".shiftwatch/demo")
    rules: Path = Path("deploy/triggers.toml")
    train_minutes: float = 1.0
    tuning_histories: int = 100  # spliced histories (and controls) to tune a missing detector on
    timeout_s: float = 600.0
    feed_lines_per_second: float = 4.0
    partitions: int = 4  # one machine: a few are enough (SHIFTWATCH_PARTITIONS for production)


def ensure_checkpoint(config: DemoConfig, log: EventLog) -> None:
    if (config.checkpoint / "checkpoint.json").exists():
        print(f"model: {config.checkpoint} (delete it to retrain)")
        return
    from model.data.splits import SplitSpec
    from model.net.checkpoint import save_checkpoint
    from model.training.train import TrainConfig, train

    print(f"model: none at {config.checkpoint}; training one on {log.name} ({config.train_minutes:g} min budget)")
    split = SplitSpec.for_log(log)
    result = train(log, split, config=replace(TrainConfig(), max_minutes=config.train_minutes, refit=False))
    save_checkpoint(result.checkpoint, config.checkpoint)


def ensure_detector(config: DemoConfig, log: EventLog) -> None:
    from model.net.checkpoint import load_checkpoint
    from model.online.detector import DETECTOR_FILE, save_detector, tuned_for

    checkpoint = load_checkpoint(config.checkpoint)
    if (config.checkpoint / DETECTOR_FILE).exists() and tuned_for(config.checkpoint) in (
        None,
        checkpoint.model_version,
    ):
        print(
            f"shift detector: {config.checkpoint / DETECTOR_FILE} (make detect-eval retunes it with the full evaluation)"
        )
        return
    from model.shift_eval.harness import calibrated_detector

    print(
        f"shift detector: none for this checkpoint; tuning one on {config.tuning_histories} spliced validation histories"
    )
    detector, provenance = calibrated_detector(checkpoint, log, config.tuning_histories)
    save_detector(detector, config.checkpoint, provenance)


def describe(shift: dict) -> str:
    def moves(changes: list[dict]) -> str:
        return ", ".join(f"{c['category_id']} {c['before']:.0%}->{c['after']:.0%}" for c in changes) or "-"

    confidence = "n/a" if shift["confidence"] is None else f"{shift['confidence']:.0%}"
    evidence = ", ".join(f"{e['event_type']} {e['item_id']} ({e['category_id']})" for e in shift["evidence"][:2])
    return (
        f"user {shift['user_id']:>8} after {shift['sequence_length']:>4} events: from {moves(shift['from_categories'])} "
        f"to {moves(shift['to_categories'])}; confidence {confidence}; evidence: {evidence}"
    )


async def follow(bootstrap: str, expected: int, config: DemoConfig, worker: WorkerProcess) -> dict[str, float]:
    """Print a live feed of interest shifts until ``expected`` updates have arrived."""
    consumer = AIOKafkaConsumer(
        UPDATES.name,
        SHIFTS.name,
        INVALID.name,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    counts: dict[str, float] = {"updates": 0, "dead_letters": 0, "shifts": 0}
    started = last_line = last_progress = time.monotonic()
    try:
        while counts["updates"] < expected:
            if worker.exited():
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {worker.log}")
            if time.monotonic() - started > config.timeout_s:
                raise TimeoutError(f"only {counts['updates']:,} of {expected:,} updates after {config.timeout_s:g} s")
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                for record in records:
                    if tp.topic == INVALID.name:
                        counts["dead_letters"] += 1
                    elif tp.topic == UPDATES.name:
                        counts["updates"] += 1
                    else:
                        counts["shifts"] += 1
                        now = time.monotonic()
                        if now - last_line >= 1 / config.feed_lines_per_second:
                            print(f"  {describe(json.loads(record.value))}", flush=True)
                            last_line = now
            if time.monotonic() - last_progress >= 5:
                elapsed = time.monotonic() - started
                print(
                    f"-- {counts['updates']:,}/{expected:,} updates, {counts['updates'] / elapsed:,.0f}/s", flush=True
                )
                last_progress = time.monotonic()
        for tp, records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).items():  # stragglers
            if tp.topic == SHIFTS.name:
                counts["shifts"] += len(records)
    finally:
        await consumer.stop()
    counts["seconds"] = round(time.monotonic() - started, 1)
    return counts


def service_stats(service: WorkerProcess, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.web_port}{path}", timeout=5) as response:
        return json.loads(response.read())


def wait_for_shifts(services: dict[str, WorkerProcess], shifts: int, timeout_s: float = 120.0) -> dict[str, dict]:
    """The stats of each downstream service once it has read all ``shifts``."""
    deadline = time.monotonic() + timeout_s
    paths = {"triggers": "/triggers/stats", "demand": "/demand/stats"}
    while True:
        stats = {}
        for name, service in services.items():
            if service.exited():
                raise RuntimeError(f"shiftwatch {name} exited with {service.returncode}; see {service.log}")
            try:
                stats[name] = service_stats(service, paths[name])
            except OSError:
                stats[name] = {}
        read = {name: s.get("shifts", 0) for name, s in stats.items()}
        if all(n >= shifts for n in read.values()):
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"downstream services read {read} of {shifts:,} shifts after {timeout_s:g} s")
        time.sleep(0.5)


def summary(services: dict[str, WorkerProcess], shifts: int, n: int = 5) -> str:
    stats = wait_for_shifts(services, shifts)
    movers = service_stats(services["demand"], f"/demand/top-movers?window=all&n={n}")

    def lines(side: str) -> list[str]:
        return [
            f"    {m['category_id']:>8}  {m['net_mass']:+.2f} net mass ({m['users_in']} users shifted in, {m['users_out']} out)"
            for m in movers[side]
        ] or ["    (none)"]

    triggers, demand = stats["triggers"], stats["demand"]
    rules = ", ".join(f"{rule} {count:,}" for rule, count in triggers["fired"].items())
    windows = ", ".join(f"{kind} {count:,}" for kind, count in demand["published"].items())
    return "\n".join(
        [
            "summary of the replay",
            f"  categories gaining interest (top {n}, over all shifts):",
            *lines("rising"),
            f"  categories losing interest (top {n}):",
            *lines("falling"),
            f"  marketing triggers fired: {sum(triggers['fired'].values()):,} ({rules}) -> marketing.triggers",
            f"  demand windows closed: {windows} -> inventory.category-demand "
            f"({demand['open_windows']:,} still open: their event time has not passed; "
            f"{sum(demand['late'].values()):,} window counts of shifts that came after their window closed)",
        ]
    )


def run_demo(config: DemoConfig = DemoConfig()) -> int:
    shutil.rmtree(config.state_dir, ignore_errors=True)
    config.state_dir.mkdir(parents=True)
    log = load_event_log(config.data)
    print(f"data: {config.data}: {len(log.users):,} users, {log.n_events:,} events")
    ensure_checkpoint(config, log)
    ensure_detector(config, log)
    external = os.environ.get("KAFKA_BOOTSTRAP")
    broker = None if external else EmbeddedBroker(config.state_dir / "broker")
    processes: list[WorkerProcess] = []
    try:
        bootstrap = broker.start() if broker is not None else os.environ["KAFKA_BOOTSTRAP"]
        where = "external" if broker is None else f"embedded Apache Kafka, pid {broker.pid}"
        print(f"kafka: {bootstrap} ({where})")
        for name, outcome in asyncio.run(
            create_topics(bootstrap, Settings().erasure_deadline_s, config.partitions)
        ).items():
            print(f"topic {name}: {outcome}")
        app_id = f"shiftwatch-demo-{int(time.time())}"

        def start(name: str, command: tuple[str, ...]) -> WorkerProcess:
            process = WorkerProcess(
                config.state_dir / f"{name}.log",
                command=command,
                kafka_bootstrap=bootstrap,
                app_id=app_id,
                checkpoint=config.checkpoint,
                data_dir=config.state_dir / name,
                partitions=config.partitions,
            ).start()
            processes.append(process)
            return process

        worker = start("worker", ("worker",))
        downstream = {
            "triggers": start("triggers", ("triggers", "--rules", str(config.rules))),
            "demand": start("demand", ("demand",)),
        }
        web = f"http://127.0.0.1:{worker.web_port}"
        print(f"worker: pid {worker.pid}; live dashboard at {web}/dashboard, metrics at {web}/metrics")
        print(
            f"downstream: shiftwatch triggers ({config.rules}), shiftwatch demand "
            f"(top movers at http://127.0.0.1:{downstream['demand'].web_port}/demand/top-movers)"
        )
        print("replaying the sample; live feed of interest shifts (at most a few lines a second):")

        async def replay_and_follow() -> dict[str, float]:
            following = asyncio.create_task(follow(bootstrap, log.n_events, config, worker))
            await replay(log, bootstrap, progress=False)
            return await following

        counts = asyncio.run(replay_and_follow())
        print(
            f"done: {counts['updates']:,} interest updates, {counts['shifts']:,} interest shifts, "
            f"{counts['dead_letters']:,} dead letters, in {counts['seconds']} s"
        )
        print(summary(downstream, int(counts["shifts"])))
        return 0
    finally:
        for process in processes:
            process.stop()
        if broker is not None:
            broker.stop()
