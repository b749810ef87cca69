"""End-to-end benchmark: one worker process on a real broker, against two ceilings.

In one run, on one broker, with the same input (the Taobao sample, pre-loaded into the
input topic):

* ``raw_consumer_eps``: an aiokafka consumer reading the input topic, doing nothing;
* ``trivial_faust_eps``: a Faust agent consuming it in batches (``take_events``), doing nothing;
* ``e2e_eps``: the ShiftWatch worker, from its first update to its last, sustained;
* ``latency_p50_ms`` / ``latency_p99_ms``: event produced -> its update consumed, with
  events produced at ``latency_load`` of the measured throughput for ``latency_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from model.data.loaders import EventLog
from stream.ops.admin import create_topics
from stream.ops.broker import EmbeddedBroker
from stream.ops.process import WorkerProcess
from stream.ops.replay import replay
from stream.settings import Settings
from topics.specs import EVENTS, UPDATES

TRIVIAL_AGENT = """
import os, time, faust
app = faust.App("trivial-" + os.environ["RUN"], broker="kafka://" + os.environ["KAFKA_BOOTSTRAP"],
                store="memory://", topic_partitions={partitions}, consumer_auto_offset_reset="earliest",
                web_enabled=False)
topic = app.topic("{topic}", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
seen = {{"n": 0, "first": None}}
@app.agent(topic)
async def count(stream):
    async for batch in stream.take_events(1000, within=0.05):
        seen["first"] = seen["first"] or time.monotonic()
        seen["n"] += len(batch)
        if seen["n"] >= int(os.environ["EXPECTED"]):
            print(f"RESULT {{seen['n']}} {{time.monotonic() - seen['first']}}", flush=True)
            os._exit(0)
"""


@dataclass(frozen=True)
class E2EConfig:
    latency_seconds: float = 20.0
    latency_load: float = 0.5
    timeout_s: float = 900.0


async def _raw_consumer(bootstrap: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(EVENTS.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        count, first = 0, 0.0
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            first = first or time.monotonic()
            count += sum(len(r) for r in batches.values())
        return count / (time.monotonic() - first)
    finally:
        await consumer.stop()


def _trivial_faust(bootstrap: str, expected: int, workdir: Path, timeout: float, partitions: int) -> float:
    script = workdir / "trivial_agent.py"
    script.write_text(TRIVIAL_AGENT.format(partitions=partitions, topic=EVENTS.name))
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "EXPECTED": str(expected), "RUN": str(int(time.time()))}
    result = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "trivial_agent", "worker", "--without-web", "-l", "warn"],
        cwd=workdir,
        env={**env, "PYTHONPATH": str(workdir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    line = next((text for text in result.stdout.splitlines() + result.stderr.splitlines() if "RESULT" in text), None)
    if line is None:
        raise RuntimeError(f"the trivial agent did not finish:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    count, seconds = line.split("RESULT", 1)[1].split()[:2]
    return int(count) / float(seconds)


async def _await_updates(bootstrap: str, expected: int, worker: WorkerProcess, timeout: float) -> list[float]:
    """Arrival times (monotonic) of the first ``expected`` updates."""
    consumer = AIOKafkaConsumer(UPDATES.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    arrivals: list[float] = []
    deadline = time.monotonic() + timeout
    try:
        while len(arrivals) < expected:
            if worker.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"worker stopped or timed out after {len(arrivals):,} of {expected:,} updates")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            now = time.monotonic()
            arrivals.extend(now for records in batches.values() for _ in records)
    finally:
        await consumer.stop()
    return arrivals


async def _latency(bootstrap: str, log: EventLog, rate: float, seconds: float, already: int) -> list[float]:
    """Produce fresh events at ``rate``; milliseconds from each send to its update's arrival."""
    users = log.users
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    consumer = AIOKafkaConsumer(UPDATES.name, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None)
    await producer.start()
    await consumer.start()
    await consumer.seek_to_end()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    base_ts = max(u.timestamps[-1] for u in users if u.timestamps) * 1000 + 1000
    n = int(rate * seconds)

    async def send() -> None:
        started = time.monotonic()
        for i in range(n):
            user = users[i % len(users)]
            event_id = f"latency-{already}-{i}"
            value = {
                "event_id": event_id,
                "user_id": user.user_id,
                "item_id": user.items[-1],
                "category_id": user.categories[-1],
                "event_type": "view",
                "ts": base_ts + i,
            }
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[event_id] = time.monotonic()
            await producer.send(EVENTS.name, key=user.user_id.encode(), value=json.dumps(value).encode())

    sender = asyncio.create_task(send())
    deadline = time.monotonic() + seconds + 60
    try:
        while len(latencies) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.monotonic()
                for record in records:
                    event_id = json.loads(record.value)["event_id"]
                    if event_id in sent:
                        latencies.append((now - sent[event_id]) * 1000)
        await sender
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def run_e2e_bench(log: EventLog, checkpoint: Path, config: E2EConfig = E2EConfig()) -> dict[str, Any]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="shiftwatch-e2e-") as tmp:
        workdir = Path(tmp)
        broker = None if external else EmbeddedBroker(workdir / "broker")
        worker: WorkerProcess | None = None
        try:
            bootstrap = external or broker.start()  # type: ignore[union-attr]
            asyncio.run(create_topics(bootstrap, settings.erasure_deadline_s, settings.partitions))
            expected = asyncio.run(replay(log, bootstrap))
            raw_eps = asyncio.run(_raw_consumer(bootstrap, expected))
            trivial_eps = _trivial_faust(bootstrap, expected, workdir, config.timeout_s, settings.partitions)
            worker = WorkerProcess(
                workdir / "worker.log",
                kafka_bootstrap=bootstrap,
                checkpoint=checkpoint,
                app_id=f"shiftwatch-e2e-{int(time.time())}",
                data_dir=workdir / "worker",
                partitions=settings.partitions,
            ).start()
            arrivals = asyncio.run(_await_updates(bootstrap, expected, worker, config.timeout_s))
            e2e_eps = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)
            latencies = asyncio.run(
                _latency(bootstrap, log, config.latency_load * e2e_eps, config.latency_seconds, expected)
            )
        finally:
            if worker is not None:
                worker.stop()
            if broker is not None:
                broker.stop()
    return {
        "e2e_eps": round(e2e_eps, 1),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "trivial_faust_eps": round(trivial_eps, 1),
        "raw_consumer_eps": round(raw_eps, 1),
        "setup": {
            "dataset": log.name,
            "events": expected,
            "partitions": settings.partitions,
            "latency_rate_eps": round(config.latency_load * e2e_eps, 1),
            "latency_events": len(latencies),
            "cpu_count": os.cpu_count(),
            "broker": "external" if external else "embedded Apache Kafka",
        },
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    setup = results["setup"]
    lines = [
        "# End-to-end benchmark",
        "",
        f"One worker process, {setup['events']:,} events of {setup['dataset']} pre-loaded into "
        f"{setup['partitions']} partitions, {setup['broker']}, {setup['cpu_count']} CPUs. "
        "Produced by `python -m bench.e2e`.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| raw aiokafka consumer, events/s | {results['raw_consumer_eps']:,.0f} |",
        f"| trivial Faust agent, events/s | {results['trivial_faust_eps']:,.0f} |",
        f"| ShiftWatch worker end to end, events/s | {results['e2e_eps']:,.0f} |",
        f"| latency p50 / p99 at {setup['latency_rate_eps']:,.0f} events/s, ms | "
        f"{results['latency_p50_ms']:,.1f} / {results['latency_p99_ms']:,.1f} |",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.e2e``: sustained events/s and produce-to-update latency of one worker process
    (embedded broker unless KAFKA_BOOTSTRAP is set), with the raw aiokafka and trivial-Faust ceilings
    from the same run."""
    import argparse

    from model.data.loaders import load_event_log
    from model.net.checkpoint import load_checkpoint
    from stream.cli.common import DEFAULT_DATA

    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=main.__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("checkpoints/taobao"),
        help="trained checkpoint directory (default: %(default)s)",
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="event log to pre-load and replay (default: %(default)s)"
    )
    parser.add_argument("--json", required=True, type=Path, help="where to write the results JSON")
    parser.add_argument("--markdown", type=Path, help="Markdown table to write (default: beside the JSON)")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help="seconds of paced load for the latency figures (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    load_checkpoint(args.checkpoint)  # fail early and clearly
    results = run_e2e_bench(load_event_log(args.data), args.checkpoint, E2EConfig(latency_seconds=args.latency_seconds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, args.markdown or args.json.with_suffix(".md"))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
