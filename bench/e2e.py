"""End-to-end benchmark: one worker process on a real broker, its ceilings, and its latency.

In one run, on one broker, for each data set (the head sample and the 66k-user time slice)
and each processing guarantee (at-least-once, exactly-once), on freshly created topics:

1. **Peers** (once per data set): one pass of the log, pre-loaded into the input topic, read
   by a raw aiokafka consumer (``raw_consumer_eps``) and by a Faust agent that does nothing
   with its batches (``trivial_faust_eps``).
2. **Drain**: the worker starts on that backlog; ``drain_eps`` is its rate from the first
   update to the last (Kafka timestamps), and the users table's changelog gives
   ``row_bytes_median``, the median size of a stored user row.
3. **Search**: the max sustainable rate. Events are offered open loop at a candidate rate,
   starting at the drain rate; the rate holds when, after the warm-up, the updates keep pace
   with the input within ``pace_tolerance`` and every event is answered within ``grace_s`` of
   the end; otherwise the next candidate is ``search_step`` times the lower of the candidate and
   the rate the updates came at while it was offered (``output_eps``: what the worker managed
   under that load; a drain of users with no history yet can overstate it many times).
4. **Levels**: open-loop latency at fixed offered rates (``offered_eps`` and ``half_of_max``
   of the max sustainable rate), ``level_seconds`` each after ``warmup_seconds``. A level
   above the max sustainable rate is reported as saturated, not run: past saturation a
   latency only measures how long the run lasted.

The load is the log again and again: pass ``c`` of it comes ``c`` spans later in event time
under fresh event ids (same users), so every event is new to the worker and each user's
history keeps growing in time order. Send times come from the schedule (event ``i`` at
``start + i / rate``, written as the message's Kafka timestamp, however late the producer
gets to it: no coordinated omission); an event's latency runs from that timestamp to its
update's (or dead letter's) Kafka timestamp, and an event with no answer by the deadline
counts as infinitely late, so every event is accounted for. Under exactly-once the update's
timestamp is its production, which precedes its commit (and visibility to a committed reader)
by at most the commit interval.

The load generator and the answer reader run in this process, on the same cores as the
worker and the broker: ``achieved_eps`` and ``send_lag_ms_max`` say whether it kept up. The
generator sends what is due every ``TICK_S`` (5 ms) as one record batch per partition, which
costs it about half the CPU of one ``producer.send`` per event (88 against 180 µs an event at
2,000 events/s); the tick's delay is part of the latency measured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from bench.scoring import HEAD, TIMESLICE
from bench.soak import DAY_MS
from model.data.loaders import EventLog, load_event_log
from stream.ops.admin import partition_counts, recreate_topics
from stream.ops.broker import EmbeddedBroker
from stream.ops.process import WorkerProcess
from stream.ops.replay import messages
from stream.settings import Settings
from topics.specs import EVENTS, INVALID, UPDATES

GUARANTEES = ("at_least_once", "exactly_once")
TICK_S = 0.005  # how often the load generator sends what is due

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
    """How long and how hard to load the worker (the defaults are the published run's)."""

    level_seconds: float = 60.0
    warmup_seconds: float = 10.0
    search_seconds: float = 30.0
    search_step: float = 0.85
    search_tries: int = 6
    offered_eps: tuple[float, ...] = (1_000.0, 2_000.0, 5_000.0, 10_000.0)
    half_of_max: float = 0.5
    pace_tolerance: float = 0.01
    grace_s: float = 5.0
    answer_timeout_s: float = 120.0
    guarantees: tuple[str, ...] = GUARANTEES
    timeout_s: float = 900.0


class _Answer(msgspec.Struct):
    event_id: str | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


@dataclass(frozen=True)
class Event:
    key: bytes
    value: bytes
    event_id: str


class Load:
    """The log's events in time order, again and again: pass ``c`` is ``c`` spans later in event
    time, under ids hashed from the original and ``c`` (the same users, every event new)."""

    def __init__(self, log: EventLog) -> None:
        self.base = [(key, value, json.loads(value)) for _ts, key, value in messages(log)]
        times = [event["ts"] for _key, _value, event in self.base]
        self.span_ms = max(times) - min(times) + DAY_MS
        self.taken = 0

    def take(self, n: int) -> list[Event]:
        events = []
        for i in range(self.taken, self.taken + n):
            cycle, index = divmod(i, len(self.base))
            key, value, event = self.base[index]
            if cycle:
                fresh = hashlib.blake2b(f"{event['event_id']}:{cycle}".encode(), digest_size=12).hexdigest()
                event = {**event, "event_id": fresh, "ts": event["ts"] + cycle * self.span_ms}
                value = json.dumps(event, separators=(",", ":")).encode()
            events.append(Event(key, value, event["event_id"]))
        self.taken += n
        return events


@dataclass(frozen=True)
class Offered:
    """What the load generator sent: each event's scheduled time (ms) and how it kept up."""

    scheduled_ms: list[int]
    achieved_eps: float
    send_lag_ms_max: float


async def offer(bootstrap: str, events: Sequence[Event], rate: float | None) -> Offered:
    """Produce ``events`` open loop at ``rate`` per second (``None``: as fast as possible), each
    stamped with its scheduled time; waits until the broker has them all.

    Every tick sends the events due by then, as one record batch per partition (partitioned by
    key as the Java client and aiokafka do): far cheaper per event than ``producer.send``, so
    that the generator, on the worker's cores, takes as little of them as it can."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, max_batch_size=256 * 1024)
    await producer.start()
    scheduled_ms: list[int] = []
    deliveries = []
    lag = 0.0
    try:
        partitions = sorted(await producer.partitions_for(EVENTS.name))
        partition_of = {key: DefaultPartitioner()(key, partitions, partitions) for key in {e.key for e in events}}
        start = time.time() + 0.1
        i = 0
        while i < len(events):
            now = time.time()
            due = len(events) if rate is None else min(len(events), math.floor((now - start) * rate) + 1)
            batches: dict[int, BatchBuilder] = {}
            while i < due:
                at = now if rate is None else start + i / rate
                lag = max(lag, now - at)
                event = events[i]
                stamp = int(at * 1000)
                partition = partition_of[event.key]
                batch = batches.get(partition)
                if batch is None or batch.append(timestamp=stamp, key=event.key, value=event.value) is None:
                    if batch is not None:  # full: send it, and start the partition's next batch
                        deliveries.append(await producer.send_batch(batch, EVENTS.name, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(timestamp=stamp, key=event.key, value=event.value)
                scheduled_ms.append(stamp)
                i += 1
            for partition, batch in batches.items():
                deliveries.append(await producer.send_batch(batch, EVENTS.name, partition=partition))
            if i < len(events) and rate is not None:
                await asyncio.sleep(max(TICK_S, start + i / rate - time.time()))
        sent_by = time.time()
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    first = scheduled_ms[0] / 1000 if scheduled_ms else sent_by
    return Offered(scheduled_ms, len(events) / max(sent_by - first, 1e-9), lag * 1000)


async def partitions_of(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        counts = await partition_counts(admin)
    finally:
        await admin.close()
    return [TopicPartition(topic, p) for topic in topics for p in range(counts.get(topic, 0))]


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def answers(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    wanted: set[str],
    deadline: float,
    worker: WorkerProcess,
    isolation_level: str,
) -> tuple[dict[str, int], int]:
    """The Kafka timestamp (ms) of the first update or dead letter of each wanted event id, read
    from ``starts`` on until all are in or ``deadline`` (epoch s) passes; and how many dead letters."""
    if not starts:
        raise RuntimeError("no output partitions to read the answers from")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level=isolation_level)
    await consumer.start()
    found: dict[str, int] = {}
    dead_letters = 0
    try:
        consumer.assign(list(starts))
        for partition, offset in starts.items():
            consumer.seek(partition, offset)
        while len(found) < len(wanted) and time.time() < deadline:
            if worker.exited():
                raise RuntimeError(f"the worker exited (see {worker.log})")
            for partition, records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).items():
                for record in records:
                    if record.value is None:
                        continue
                    event_id = _decode_answer(record.value).event_id
                    if event_id in wanted and event_id not in found:
                        found[event_id] = record.timestamp
                        dead_letters += partition.topic == INVALID.name
    finally:
        await consumer.stop()
    return found, dead_letters


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile; ``None`` when it is an unanswered (infinite) one.

    >>> percentile([1.0, 2.0, 3.0, math.inf], 0.5), percentile([1.0, 2.0, 3.0, math.inf], 0.99)
    (2.0, None)
    """
    value = sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]
    return None if math.isinf(value) else round(value, 1)


@dataclass(frozen=True)
class Level:
    """One open-loop level: the measured events are those scheduled after the warm-up."""

    offered_eps: float
    sent: int
    measured: int
    completed: float
    dead_lettered: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    achieved_eps: float
    send_lag_ms_max: float
    output_eps: float
    kept_pace: bool


class Bench:
    """One data set under one guarantee: a fresh worker on fresh topics, and its load."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        checkpoint: Path,
        log: EventLog,
        guarantee: str,
        config: E2EConfig,
        partitions: int,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.checkpoint = checkpoint
        self.log = log
        self.guarantee = guarantee
        self.config = config
        self.partitions = partitions
        self.app_id = f"shiftwatch-e2e-{guarantee}-{int(time.time())}"
        self.isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
        self.load = Load(log)

    def run(self, peers: bool) -> dict[str, Any]:
        asyncio.run(recreate_topics(self.bootstrap, Settings().erasure_deadline_s, self.partitions))
        backlog = self.load.take(len(self.load.base))
        asyncio.run(offer(self.bootstrap, backlog, None))
        result: dict[str, Any] = {"data": self.log.name, "guarantee": self.guarantee, "events": len(backlog)}
        if peers:
            result["raw_consumer_eps"] = round(asyncio.run(_raw_consumer(self.bootstrap, len(backlog))), 1)
            result["trivial_faust_eps"] = round(self._trivial_faust(len(backlog)), 1)
        worker = WorkerProcess(
            self.workdir / f"{self.app_id}.log",
            kafka_bootstrap=self.bootstrap,
            checkpoint=self.checkpoint,
            app_id=self.app_id,
            data_dir=self.workdir / self.app_id,
            partitions=self.partitions,
            processing_guarantee=self.guarantee,
        ).start()
        try:
            starts = dict.fromkeys(asyncio.run(partitions_of(self.bootstrap, [UPDATES.name, INVALID.name])), 0)
            found, _ = asyncio.run(
                answers(
                    self.bootstrap,
                    starts,
                    {e.event_id for e in backlog},
                    time.time() + self.config.timeout_s,
                    worker,
                    self.isolation,
                )
            )
            if len(found) < len(backlog):
                raise RuntimeError(f"the worker answered {len(found):,} of {len(backlog):,} events of the backlog")
            stamps = sorted(found.values())
            result["drain_eps"] = round((len(stamps) - 1) / max((stamps[-1] - stamps[0]) / 1000, 1e-3), 1)
            result["row_bytes_median"] = asyncio.run(self._row_bytes_median())
            result["search"] = self._search(worker, result["drain_eps"])
            best = max((t["offered_eps"] for t in result["search"] if t["kept_pace"]), default=None)
            result["max_sustainable_eps"] = best
            result["levels"] = self._levels(worker, best)
        finally:
            worker.stop()
        return result

    def _search(self, worker: WorkerProcess, start: float) -> list[dict[str, Any]]:
        trials = []
        rate = start
        for _ in range(self.config.search_tries):
            level = self._level(worker, rate, self.config.search_seconds)
            trials.append(asdict(level))
            print(
                f"  search {self.log.name} {self.guarantee}: {rate:,.0f} events/s kept pace: {level.kept_pace} "
                f"(updates at {level.output_eps:,.0f}/s)"
            )
            if level.kept_pace:
                break
            rate = min(rate, level.output_eps) * self.config.search_step
        return trials

    def _levels(self, worker: WorkerProcess, best: float | None) -> list[dict[str, Any]]:
        half = round(best * self.config.half_of_max) if best else None
        rates = sorted({*self.config.offered_eps, *([half] if half else [])})
        levels = []
        for rate in rates:
            entry: dict[str, Any] = {"guarantee": self.guarantee, "data": self.log.name, "offered_eps": rate}
            if best is None or rate > best:
                entry.update(saturated=True, completed=None, p50_ms=None, p99_ms=None, p999_ms=None)
            else:
                entry.update(saturated=False, **asdict(self._level(worker, rate, self.config.level_seconds)))
                print(
                    f"  level {self.log.name} {self.guarantee} {rate:,.0f}/s: p50 {entry['p50_ms']} p99 {entry['p99_ms']}"
                )
            entry["half_of_max"] = rate == half
            levels.append(entry)
        return levels

    def _level(self, worker: WorkerProcess, rate: float, seconds: float) -> Level:
        config = self.config
        warm = int(rate * config.warmup_seconds)
        events = self.load.take(warm + int(rate * seconds))
        starts = asyncio.run(end_offsets(self.bootstrap, [UPDATES.name, INVALID.name]))
        offered = asyncio.run(offer(self.bootstrap, events, rate))
        measured_ids = [e.event_id for e in events[warm:]]
        measured_ms = offered.scheduled_ms[warm:]
        end_ms = offered.scheduled_ms[-1]
        found, dead = asyncio.run(
            answers(
                self.bootstrap,
                starts,
                {e.event_id for e in events},
                end_ms / 1000 + config.answer_timeout_s,
                worker,
                self.isolation,
            )
        )
        latencies = sorted(found[i] - sent if i in found else math.inf for i, sent in zip(measured_ids, measured_ms))
        window_start = measured_ms[0]
        answered_in_window = sum(1 for stamp in found.values() if window_start <= stamp <= end_ms)
        in_time = sum(1 for i in measured_ids if found.get(i, math.inf) <= end_ms + config.grace_s * 1000)
        pace = answered_in_window >= (1 - config.pace_tolerance) * len(measured_ids)  # output rate = input rate
        return Level(
            offered_eps=rate,
            sent=len(events),
            measured=len(measured_ids),
            completed=round(sum(1 for i in measured_ids if i in found) / len(measured_ids), 6),
            dead_lettered=dead,
            p50_ms=percentile(latencies, 0.5),
            p99_ms=percentile(latencies, 0.99),
            p999_ms=percentile(latencies, 0.999),
            achieved_eps=round(offered.achieved_eps, 1),
            send_lag_ms_max=round(offered.send_lag_ms_max, 1),
            output_eps=round(answered_in_window / max((end_ms - window_start) / 1000, 1e-3), 1),
            kept_pace=pace and in_time == len(measured_ids),
        )

    async def _row_bytes_median(self) -> int:
        """The median size of the latest row of every user in the users table's changelog."""
        topic = f"{self.app_id}-users-changelog"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, isolation_level=self.isolation)
        await consumer.start()
        rows: dict[bytes, int] = {}
        try:
            partitions = await partitions_of(self.bootstrap, [topic])
            ends = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=20_000)).values():
                    for record in records:
                        if record.key is not None:
                            rows[record.key] = len(record.value) if record.value is not None else 0
        finally:
            await consumer.stop()
        return int(statistics.median(size for size in rows.values() if size))

    def _trivial_faust(self, expected: int) -> float:
        script = self.workdir / "trivial_agent.py"
        script.write_text(TRIVIAL_AGENT.format(partitions=self.partitions, topic=EVENTS.name))
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "EXPECTED": str(expected),
            "RUN": self.app_id,
            "PYTHONPATH": str(self.workdir),
        }
        result = subprocess.run(
            [sys.executable, "-m", "faust", "-A", "trivial_agent", "worker", "--without-web", "-l", "warn"],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.config.timeout_s,
        )
        lines = result.stdout.splitlines() + result.stderr.splitlines()
        line = next((text for text in lines if "RESULT" in text), None)
        if line is None:
            raise RuntimeError(f"the trivial agent did not finish:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        count, seconds = line.split("RESULT", 1)[1].split()[:2]
        return int(count) / float(seconds)


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


def run_e2e_bench(logs: Sequence[EventLog], checkpoint: Path, config: E2EConfig = E2EConfig()) -> dict[str, Any]:
    """Every data set under every guarantee (see the module docstring); the first data set under
    at-least-once gives the headline keys."""
    external = os.environ.get("KAFKA_BOOTSTRAP")
    partitions = Settings.from_env().partitions
    runs = []
    with tempfile.TemporaryDirectory(prefix="shiftwatch-e2e-") as tmp:
        workdir = Path(tmp)
        broker = None if external else EmbeddedBroker(workdir / "broker")
        try:
            bootstrap = external or broker.start()  # type: ignore[union-attr]
            for log in logs:
                for n, guarantee in enumerate(config.guarantees):
                    print(f"{log.name}, {guarantee}")
                    bench = Bench(bootstrap, workdir, checkpoint, log, guarantee, config, partitions)
                    runs.append(bench.run(peers=n == 0))
        finally:
            if broker is not None:
                broker.stop()
    head = runs[0]
    half: dict[str, Any] = next((level for level in head["levels"] if level["half_of_max"]), {})
    return {
        "e2e_eps": head["max_sustainable_eps"],
        "latency_p50_ms": half.get("p50_ms"),
        "latency_p99_ms": half.get("p99_ms"),
        "trivial_faust_eps": head["trivial_faust_eps"],
        "raw_consumer_eps": head["raw_consumer_eps"],
        "row_bytes_median": head["row_bytes_median"],
        "latency": [level for run in runs for level in run["levels"]],
        "runs": [{k: v for k, v in run.items() if k != "levels"} for run in runs],
        "setup": {
            "partitions": partitions,
            "cpu_count": os.cpu_count(),
            "broker": "external" if external else "embedded Apache Kafka",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        },
    }


def _shown(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    setup = results["setup"]
    lines = [
        "# End-to-end benchmark",
        "",
        f"One worker process, {setup['partitions']} partitions, {setup['broker']}, {setup['cpu_count']} CPUs "
        f"shared by the broker, the worker and the load generator. Produced by `make bench-e2e` "
        "(`python -m bench.e2e`); what each figure means is in the module's docstring.",
        "",
        "## Throughput",
        "",
        "| data | guarantee | raw aiokafka, events/s | trivial Faust agent, events/s | worker draining a backlog, "
        "events/s | worker, max sustainable, events/s | median row, bytes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['data']} | {run['guarantee']} | {_shown(run.get('raw_consumer_eps'))} | "
            f"{_shown(run.get('trivial_faust_eps'))} | {_shown(run['drain_eps'])} | "
            f"{_shown(run['max_sustainable_eps'])} | {run['row_bytes_median']:,} |"
        )
    lines += [
        "",
        f"Max sustainable: the highest offered rate tried at which, after {setup['warmup_seconds']:g} s of warm-up "
        f"and over {setup['search_seconds']:g} s, the updates kept pace with the input within "
        f"{setup['pace_tolerance']:.0%} and every event was answered within {setup['grace_s']:g} s of the end "
        f"(from the drain rate; after a failed try, x{setup['search_step']:g} the lower of the rate tried and the "
        "rate the updates came at meanwhile).",
        "",
        "## Latency, open loop",
        "",
        f"From each event's scheduled send time (its Kafka timestamp) to its update's Kafka timestamp, "
        f"{setup['level_seconds']:g} s per level after {setup['warmup_seconds']:g} s of warm-up; an event "
        "unanswered counts as infinitely late (`-`). Levels above the max sustainable rate are saturated and not run.",
        "",
        "| data | guarantee | offered, events/s | achieved, events/s | events | completed | p50 ms | p99 ms | "
        "p99.9 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in results["latency"]:
        offered = f"{level['offered_eps']:,.0f}" + (" (50% of max)" if level["half_of_max"] else "")
        if level["saturated"]:
            lines.append(f"| {level['data']} | {level['guarantee']} | {offered} | saturated | | | | | |")
            continue
        lines.append(
            f"| {level['data']} | {level['guarantee']} | {offered} | {level['achieved_eps']:,.0f} | "
            f"{level['measured']:,} | {level['completed']:.2%} | {_shown(level['p50_ms'], 1)} | "
            f"{_shown(level['p99_ms'], 1)} | {_shown(level['p999_ms'], 1)} |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def write_plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p99 against the offered rate, one line per data set and guarantee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for run in results["runs"]:
        run_levels = [
            level
            for level in results["latency"]
            if level["data"] == run["data"] and level["guarantee"] == run["guarantee"] and not level["saturated"]
        ]
        for quantile, style in (("p50_ms", "-o"), ("p99_ms", "--o")):
            points = [(level["offered_eps"], level[quantile]) for level in run_levels if level[quantile] is not None]
            if points:
                axis.plot(*zip(*points), style, label=f"{run['data']}, {run['guarantee']}, {quantile[:3]}")
    axis.set_xlabel("offered events/s (open loop)")
    axis.set_ylabel("latency, ms (Kafka timestamps)")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.e2e``: one worker process end to end (embedded broker unless KAFKA_BOOTSTRAP
    is set): max sustainable rate and open-loop latency per data set and guarantee, with the raw
    aiokafka and trivial-Faust ceilings from the same run."""
    from model.net.checkpoint import load_checkpoint

    defaults = E2EConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=main.__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help="checkpoint directory")
    parser.add_argument(
        "--data", type=Path, nargs="+", default=[HEAD, TIMESLICE], help="event logs, the first the headline"
    )
    parser.add_argument("--guarantees", nargs="+", choices=GUARANTEES, default=list(defaults.guarantees))
    parser.add_argument("--seconds", type=float, default=defaults.level_seconds, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_seconds, help="warm-up seconds per level")
    parser.add_argument("--search-seconds", type=float, default=defaults.search_seconds, help="per search trial")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=list(defaults.offered_eps), help="offered events/s of the levels"
    )
    parser.add_argument("--json", type=Path, required=True, help="results file to write")
    parser.add_argument("--markdown", type=Path, help="Markdown report (default: beside the JSON)")
    parser.add_argument("--plot", type=Path, help="latency plot, PNG (default: beside the JSON)")
    args = parser.parse_args(argv)
    load_checkpoint(args.checkpoint)  # fail early and clearly
    config = E2EConfig(
        level_seconds=args.seconds,
        warmup_seconds=args.warmup,
        search_seconds=args.search_seconds,
        offered_eps=tuple(args.rates),
        guarantees=tuple(args.guarantees),
    )
    logs = [load_event_log(path, "taobao") for path in args.data]
    results = run_e2e_bench(logs, args.checkpoint, config)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, args.markdown or args.json.with_suffix(".md"))
    write_plot(results, args.plot or args.json.with_suffix(".png"))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (dict, list))}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
