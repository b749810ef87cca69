"""``shiftwatch demo``: the whole service on the embedded broker and the shipped data.

Starts Apache Kafka (unless ``KAFKA_BOOTSTRAP`` is set), creates the topics, trains a
small model when no checkpoint exists, starts a worker process, replays the Taobao sample
into the input topic, prints a live feed of interest updates, then stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from model.data import EventLog, load_event_log
from stream.broker import EmbeddedBroker
from stream.kafka import create_topics
from stream.replay import replay
from stream.worker import WorkerProcess
from topics.specs import INVALID, UPDATES


@dataclass(frozen=True)
class DemoConfig:
    data: Path = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
    checkpoint: Path = Path("checkpoints/taobao")
    state_dir: Path = Path(".shiftwatch/demo")
    train_minutes: float = 1.0
    timeout_s: float = 600.0
    feed_lines_per_second: float = 4.0


def ensure_checkpoint(config: DemoConfig, log: EventLog) -> None:
    if (config.checkpoint / "checkpoint.json").exists():
        print(f"model: {config.checkpoint} (delete it to retrain)")
        return
    from model.checkpoint import save_checkpoint
    from model.splits import SplitSpec
    from model.train import TrainConfig, train

    print(f"model: none at {config.checkpoint}; training one on {log.name} ({config.train_minutes:g} min budget)")
    split = SplitSpec.for_log(log)
    result = train(log, split, config=replace(TrainConfig(), max_minutes=config.train_minutes, refit=False))
    save_checkpoint(result.checkpoint, config.checkpoint)


def describe(update: dict) -> str:
    top = " · ".join(f"{c['category_id']} {c['probability']:.0%}" for c in update["top_categories"][:3])
    return f"user {update['user_id']:>8}  after {update['sequence_length']:>4} events  ->  {top}   (entropy {update['entropy']:.2f})"


async def follow(bootstrap: str, expected: int, config: DemoConfig, worker: WorkerProcess) -> dict[str, int]:
    """Print a live feed (a user's line when their top interest changes) until ``expected`` updates."""
    consumer = AIOKafkaConsumer(
        UPDATES.name, INVALID.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    counts = {"updates": 0, "dead_letters": 0, "top_changes": 0}
    top: dict[str, str] = {}
    started = last_line = last_progress = time.monotonic()
    try:
        while counts["updates"] < expected:
            if worker.exited():
                raise RuntimeError(f"the worker exited with {worker.process.returncode}; see {worker.log}")  # type: ignore[union-attr]
            if time.monotonic() - started > config.timeout_s:
                raise TimeoutError(f"only {counts['updates']:,} of {expected:,} updates after {config.timeout_s:g} s")
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                for record in records:
                    if tp.topic == INVALID.name:
                        counts["dead_letters"] += 1
                        continue
                    counts["updates"] += 1
                    update = json.loads(record.value)
                    best = update["top_categories"][0]["category_id"] if update["top_categories"] else ""
                    if top.get(update["user_id"], best) != best:
                        counts["top_changes"] += 1
                        now = time.monotonic()
                        if now - last_line >= 1 / config.feed_lines_per_second:
                            print(f"  {describe(update)}   [top was {top[update['user_id']]}]", flush=True)
                            last_line = now
                    top[update["user_id"]] = best
            if time.monotonic() - last_progress >= 5:
                elapsed = time.monotonic() - started
                print(f"-- {counts['updates']:,}/{expected:,} updates, {counts['updates'] / elapsed:,.0f}/s", flush=True)
                last_progress = time.monotonic()
    finally:
        await consumer.stop()
    counts["seconds"] = round(time.monotonic() - started, 1)
    return counts


def run_demo(config: DemoConfig = DemoConfig()) -> int:
    shutil.rmtree(config.state_dir, ignore_errors=True)
    config.state_dir.mkdir(parents=True)
    log = load_event_log(config.data)
    print(f"data: {config.data}: {len(log.users):,} users, {log.n_events:,} events")
    ensure_checkpoint(config, log)
    external = os.environ.get("KAFKA_BOOTSTRAP")
    broker = None if external else EmbeddedBroker(config.state_dir / "broker")
    worker: WorkerProcess | None = None
    try:
        bootstrap = external or broker.start()  # type: ignore[union-attr]
        print(f"kafka: {bootstrap} ({'external' if external else 'embedded Apache Kafka, pid %s' % broker.pid})")  # type: ignore[union-attr]
        for name, outcome in asyncio.run(create_topics(bootstrap)).items():
            print(f"topic {name}: {outcome}")
        worker = WorkerProcess(
            config.state_dir / "worker.log", kafka_bootstrap=bootstrap, app_id=f"shiftwatch-demo-{int(time.time())}",
            checkpoint=config.checkpoint, data_dir=config.state_dir / "worker",
        ).start()  # fmt: skip
        print(f"worker: pid {worker.process.pid}, metrics at http://127.0.0.1:{worker.web_port}/metrics")  # type: ignore[union-attr]
        print("replaying the sample; live feed (a line when a user's top interest changes):")

        async def replay_and_follow() -> dict[str, int]:
            following = asyncio.create_task(follow(bootstrap, log.n_events, config, worker))
            await replay(log, bootstrap, progress=False)
            return await following

        counts = asyncio.run(replay_and_follow())
        print(
            f"done: {counts['updates']:,} interest updates, {counts['top_changes']:,} top-interest changes, "
            f"{counts['dead_letters']:,} dead letters, in {counts['seconds']} s"
        )
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
