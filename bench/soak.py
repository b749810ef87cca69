"""Soak test (``make soak``, not in CI): one worker, a million events or more, memory watched.

A shipped Taobao log (by default the 66,454-user time slice, so that tens of thousands of users
are live at once) is replayed round after round into an embedded Apache Kafka, each round's
users renamed (``<user>~<round>``) and its event time moved a day past the previous round, so
new users keep arriving while earlier ones fall silent. The worker runs with a state TTL,
so its sweeper evicts the silent ones (tombstones in the changelog). Every few seconds the
worker's resident memory (``VmRSS``) and its metrics (table rows, users evicted, cache) are
sampled. Written: JSON, a Markdown report, and a plot of memory and rows against events;
the figures are events/s, the RSS peak of each quarter of the run (bounded: the last within
10% of the second) and the RSS per 10,000 live users (:func:`rss_per_live_users`).

    python -m bench.soak --events 1000000 --json bench/results/soak.json --report bench/results/soak.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from model.data.loaders import EventLog, load_event_log
from stream.ops.admin import create_topics
from stream.ops.broker import EmbeddedBroker
from stream.ops.process import WorkerProcess
from stream.ops.replay import messages
from stream.settings import Settings
from topics.specs import EVENTS

DAY_MS = 24 * 3600 * 1000


def rounds(log: EventLog, total: int) -> Iterator[tuple[bytes, bytes]]:
    """``total`` events: the log again and again, under new user ids and later event times."""
    base = list(messages(log))
    span = base[-1][0] - base[0][0] + DAY_MS
    sent = 0
    for r in range(total // len(base) + 1):
        for ts, _key, value in base:
            if sent == total:
                return
            event = json.loads(value)
            user = f"{event['user_id']}~{r}"
            event.update(user_id=user, event_id=f"{event['event_id']}~{r}", ts=ts + r * span)
            yield user.encode(), json.dumps(event, separators=(",", ":")).encode()
            sent += 1


async def produce(bootstrap: str, stream: Iterator[tuple[bytes, bytes]], total: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in tqdm(stream, total=total, desc="produce", unit="event", mininterval=5):
            await producer.send(EVENTS.name, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def run_soak(
    log: EventLog, checkpoint: Path, total: int, ttl_s: float, sample_s: float = 5.0, timeout_s: float = 7200.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shiftwatch-soak-") as workdir:
        broker = EmbeddedBroker(Path(workdir) / "broker", heap="1g")
        worker: WorkerProcess | None = None
        try:
            bootstrap = broker.start()
            settings = Settings.from_env()
            asyncio.run(create_topics(bootstrap, settings.erasure_deadline_s, settings.partitions))
            worker = WorkerProcess(
                Path(workdir) / "worker.log",
                kafka_bootstrap=bootstrap,
                app_id="shiftwatch-soak",
                checkpoint=checkpoint,
                data_dir=Path(workdir) / "worker",
                partitions=settings.partitions,
                state_ttl_s=ttl_s,
                state_sweep_s=10,
            ).start()
            producing = threading.Thread(
                target=lambda: asyncio.run(produce(bootstrap, rounds(log, total), total)), daemon=True
            )
            producing.start()
            samples = []
            started = time.monotonic()
            with tqdm(total=total, desc="worker", unit="event", mininterval=5) as bar:
                while True:
                    if worker.exited():
                        raise RuntimeError(f"the worker exited: {worker.tail()}")
                    if time.monotonic() - started > timeout_s:
                        raise TimeoutError(f"soak not done after {timeout_s:g} s")
                    try:
                        metrics = scrape(worker.web_port)
                    except OSError:
                        time.sleep(1)
                        continue
                    done = int(metrics.get("shiftwatch_events_total", 0))
                    samples.append(
                        {
                            "seconds": round(time.monotonic() - started, 1),
                            "events": done,
                            "rss_mb": round(rss_mb(worker.pid), 1),
                            "table_rows": int(metrics.get("shiftwatch_table_rows", 0)),
                            "users_expired": int(metrics.get("shiftwatch_users_expired_total", 0)),
                            "cache_users": int(metrics.get("shiftwatch_active_users", 0)),
                            "cache_mb": round(metrics.get("shiftwatch_cache_bytes", 0) / 2**20, 1),
                        }
                    )
                    bar.update(done - bar.n)
                    if done >= total:
                        break
                    time.sleep(sample_s)
        finally:
            if worker is not None:
                worker.stop()
            broker.stop()
    return summarise(samples, total, ttl_s)


def rss_per_live_users(samples: list[dict], users: int = 10_000) -> float | None:
    """MiB of resident memory per ``users`` live users: the least-squares slope of RSS against
    table rows while the rows only grow, before the TTL has evicted anyone (later rounds reuse
    the memory evicted users left, which the bounded check covers); ``None`` when the rows grew
    by fewer than 1,000.

    >>> rss_per_live_users([{"rss_mb": 500 + r / 100, "table_rows": r, "users_expired": 0} for r in (0, 2_000, 6_000)])
    100.0
    """
    filling = [s for s in samples if s["users_expired"] == 0]
    rows = np.array([s["table_rows"] for s in filling], dtype=np.float64)
    if len(filling) < 3 or np.ptp(rows) < 1_000:
        return None
    slope = np.polyfit(rows, np.array([s["rss_mb"] for s in filling]), 1)[0]
    return round(float(slope) * users, 1)


def summarise(samples: list[dict], total: int, ttl_s: float) -> dict[str, Any]:
    """Memory in each quarter of the run (by events processed): bounded if the last quarter's
    peak is within 10% of the second quarter's; and per 10,000 live users."""
    quarters = [
        [s for s in samples if q * total / 4 <= s["events"] < (q + 1) * total / 4 or (q == 3 and s["events"] >= total)]
        for q in range(4)
    ]
    peaks = [max((s["rss_mb"] for s in quarter), default=None) for quarter in quarters]
    seconds = samples[-1]["seconds"]
    return {
        "events": total,
        "seconds": seconds,
        "events_per_second": round(total / seconds, 1),
        "state_ttl_s": ttl_s,
        "rss_peak_mb_by_quarter": peaks,
        "rss_bounded": bool(peaks[1] and peaks[3] and peaks[3] <= 1.1 * peaks[1]),
        "table_rows_max": max(s["table_rows"] for s in samples),
        "rss_mb_per_10k_live_users": rss_per_live_users(samples),
        "users_expired": samples[-1]["users_expired"],
        "samples": samples,
    }


def write_report(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = results["samples"]
    events = [s["events"] / 1e6 for s in samples]
    figure, (memory, rows) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    memory.plot(events, [s["rss_mb"] for s in samples], label="worker RSS")
    memory.plot(events, [s["cache_mb"] for s in samples], label="engine cache")
    memory.set_ylabel("MiB")
    memory.legend()
    rows.plot(events, [s["table_rows"] for s in samples], label="table rows")
    rows.plot(events, [s["users_expired"] for s in samples], label="users evicted (total)")
    rows.set_xlabel("events processed (millions)")
    rows.legend()
    figure.tight_layout()
    plot = path.with_suffix(".png")
    figure.savefig(plot, dpi=90)
    peaks = results["rss_peak_mb_by_quarter"]
    per_users = "-" if results["rss_mb_per_10k_live_users"] is None else f"{results['rss_mb_per_10k_live_users']:,}"
    path.write_text(
        f"# Soak: {results['events']:,} events through one worker\n\n"
        f"`python -m bench.soak` (`make soak`). State TTL {results['state_ttl_s']:g} s of event time, "
        "sweeper every 10 s.\n\n"
        f"| figure | value |\n|---|---|\n"
        f"| events | {results['events']:,} |\n| seconds | {results['seconds']:,} |\n"
        f"| events/s | {results['events_per_second']:,} |\n"
        f"| RSS peak by quarter of the run (MiB) | {', '.join(f'{p:,.0f}' for p in peaks if p is not None)} |\n"
        f"| RSS bounded (last quarter within 10% of the second) | {'yes' if results['rss_bounded'] else 'no'} |\n"
        f"| table rows, most at once | {results['table_rows_max']:,} |\n"
        f"| RSS per 10,000 live users, while the first users arrive (MiB) | {per_users} |\n"
        f"| users evicted by the TTL | {results['users_expired']:,} |\n\n"
        f"![memory and rows]({plot.name})\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/taobao/UserBehavior_timeslice_20171126_0900-1110.csv.gz"),
        help="log replayed round after round (default: the 66,454-user time slice, so that tens of thousands are live)",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--ttl-s", type=float, default=86_400.0, help="state TTL, seconds of event time (default: a day)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/soak.json"))
    parser.add_argument("--report", type=Path, default=Path("bench/results/soak.md"))
    args = parser.parse_args()
    results = run_soak(load_event_log(args.data), args.checkpoint, args.events, args.ttl_s)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.report)
    print(
        f"{results['events']:,} events at {results['events_per_second']:,}/s; "
        f"RSS peaks by quarter {results['rss_peak_mb_by_quarter']} MiB; bounded: {results['rss_bounded']}; "
        f"rows at most {results['table_rows_max']:,}; evicted {results['users_expired']:,}; "
        f"RSS per 10,000 live users {results['rss_mb_per_10k_live_users']} MiB"
    )


if __name__ == "__main__":
    main()
