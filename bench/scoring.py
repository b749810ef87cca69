"""Benchmark of the worker's scoring stage, as the worker runs it.

Real logs are replayed in event-time order (:func:`stream.ops.replay.messages`, the messages
the worker would read), admitted into users' rows by the worker's own
:meth:`~stream.worker.pipeline.InterestPipeline.admit` (untimed) and cut into micro-batches
of ``batch_size`` consecutive events, as one worker's agent takes them: a batch holds bursts
of one user's events beside single events of others. Each batch then goes through
:meth:`~stream.worker.pipeline.InterestPipeline.score`, the whole stage after admission
(token windows, the engine step with the item head off as served, the recent interest, the
shift detector, the update and shift records), and only that is timed.

One run measures, per data set:

* ``scoring_eps``: events per second through the stage, the worker's cached scorer (the
  median of ``repeats`` runs, all of them in ``scoring_eps_runs``);
* ``naive_eps``: the same stage at batch 1 with
  :class:`~model.online.reference.FullRecompute` (every reading a fresh forward), over the
  first ``naive_events`` events; ``speedup_vs_naive`` is the ratio;
* ``stage_us``: microseconds per event in each stage (``engine``: the full-history interest;
  ``recent``: the detector's input; ``detector``; ``records``);
* ``cache_hit_rate``: engine steps served from the cache among those with a history
  (first events cannot hit), ``cache_bytes_per_user`` and the evictions, at the worker's
  default budget (``SHIFTWATCH_CACHE_MB``);
* ``max_abs_diff``: the largest difference, over every event, of the interest and the
  recent interest (probabilities over the model's categories) from a batched ``FullRecompute`` run in
  lockstep on its own rows, and ``shifts_equal``: whether both raised the same shifts at the
  same events.

The top-level keys are the head sample's, except ``cache_hit_rate``, which is the time
slice's: the head sample's 815 users all fit in the cache.

Run ``python -m bench.scoring --checkpoint checkpoints/taobao --json bench/results/scoring.json``
(``make bench-scoring``; also ``shiftwatch bench scoring``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.data.loaders import EventLog, load_event_log
from model.net.checkpoint import Checkpoint, load_checkpoint
from model.online.detector import ShiftDetector, load_detector
from model.online.reference import FullRecompute, Recorded
from stream.ops.replay import messages
from stream.settings import Settings
from stream.worker.pipeline import Admitted, InterestPipeline, Scored, serving_scorer
from stream.worker.state import UserState
from stream.worker.tuning import tune_for_scoring

HEAD = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
TIMESLICE = Path("data/taobao/UserBehavior_timeslice_20171126_0900-1110.csv.gz")
STAGES = ("engine", "recent", "detector", "records")


@dataclass(frozen=True)
class ScoringBenchConfig:
    """``batch_size`` events per micro-batch (the worker's default), ``naive_events`` events
    for the batch-1 reference, ``threads`` for torch, ``max_events`` per data set (all: None),
    ``repeats`` timed runs per data set (the median is reported: this machine's timings vary
    by 10-20% from run to run)."""

    batch_size: int = Settings().batch_size
    naive_events: int = 1_000
    threads: int = 2
    max_events: int | None = None
    repeats: int = 3


def admitted_batches(
    log: EventLog, pipeline: InterestPipeline, batch_size: int, max_events: int | None = None
) -> Iterator[list[Admitted]]:
    """The log's events as the worker admits them, in micro-batches, each admitted only when
    the batch before it has been scored (its users' detector states are then up to date)."""
    states: dict[bytes, UserState] = {}
    now_ms = int(time.time() * 1000)
    batch: list[Admitted] = []
    for offset, (_, key, value) in enumerate(messages(log)):
        if max_events is not None and offset == max_events:
            break
        state = states.setdefault(pipeline.row_key(key), UserState.empty())
        outcome = pipeline.admit(value, key, 0, offset, state, now_ms)
        if isinstance(outcome, Admitted):  # a replayed log has no duplicates; a too-late event is dropped
            batch.append(outcome)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _shift_keys(scored: Scored) -> list[tuple[str, str]]:
    return [(s.user_id, s.event_id) for s in scored.shifts]


def timed_run(
    checkpoint: Checkpoint,
    detector: ShiftDetector,
    log: EventLog,
    config: ScoringBenchConfig,
    profiler: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """The worker's scorer over the whole log: events/s, time per stage, cache figures (and a
    profile of the scoring calls only, when a profiler is given)."""
    settings = Settings()
    scorer = serving_scorer(checkpoint, settings, detector)
    pipeline = InterestPipeline(checkpoint, settings, detector, scorer)
    scorer.times.reset()
    events, seconds, shifts = 0, 0.0, 0
    with tqdm(total=_events(log, config), desc=f"scoring {log.name}", unit="event", leave=False) as bar:
        for batch in admitted_batches(log, pipeline, config.batch_size, config.max_events):
            if profiler is not None:
                profiler.enable()
            start = time.perf_counter()
            scored = pipeline.score(batch)
            seconds += time.perf_counter() - start
            if profiler is not None:
                profiler.disable()
            events += len(batch)
            shifts += len(scored.shifts)
            bar.update(len(batch))
    stage_s = scorer.times.reset()
    stats = scorer.engine.stats
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "scoring_eps": round(events / seconds, 1),
        "stage_us": {name: round(1e6 * stage_s.get(name, 0.0) / events, 2) for name in STAGES},
        "shifts": shifts,
        "cache_hit_rate": round(stats.hits / max(1, stats.hits + stats.rebuilds), 4),
        "cache": {
            "hits": stats.hits,
            "rebuilds": stats.rebuilds,
            "first_events": stats.first_events,
            "evictions": stats.evictions,
            "users_held": scorer.engine.max_users,
            "budget_mb": settings.cache_mb,
        },
        "cache_bytes_per_user": scorer.engine.bytes_per_user,
    }


def _full_recompute(checkpoint: Checkpoint, settings: Settings, detector: ShiftDetector) -> FullRecompute:
    """The uncached reference, sized as :func:`~stream.worker.pipeline.serving_scorer` sizes the worker's scorer."""
    return FullRecompute(
        checkpoint, top_k=settings.top_k, recent_events=detector.settings.recent_events, top_m=detector.settings.top_m
    )


def naive_run(
    checkpoint: Checkpoint, detector: ShiftDetector, log: EventLog, config: ScoringBenchConfig
) -> dict[str, Any]:
    """The same stage at batch 1, every reading recomputed: the peer the scorer is measured against."""
    settings = Settings()
    pipeline = InterestPipeline(checkpoint, settings, detector, _full_recompute(checkpoint, settings, detector))
    seconds = 0.0
    events = 0
    for batch in admitted_batches(log, pipeline, 1, config.naive_events):
        start = time.perf_counter()
        pipeline.score(batch)
        seconds += time.perf_counter() - start
        events += 1
    return {"naive_events": events, "naive_eps": round(events / seconds, 1)}


def exactness_run(
    checkpoint: Checkpoint, detector: ShiftDetector, log: EventLog, config: ScoringBenchConfig
) -> dict[str, Any]:
    """The scorer and a batched full recompute in lockstep, each on its own rows: the largest
    difference of their readings and whether they raised the same shifts at the same events."""
    settings = Settings()
    fast = Recorded(serving_scorer(checkpoint, settings, detector))
    slow = Recorded(_full_recompute(checkpoint, settings, detector))
    runs = [InterestPipeline(checkpoint, settings, detector, scorer) for scorer in (fast, slow)]
    probs_diff = recent_diff = 0.0
    same_shifts = True
    shifts = 0
    batches = zip(*(admitted_batches(log, p, config.batch_size, config.max_events) for p in runs))
    for fast_batch, slow_batch in tqdm(batches, desc=f"exactness {log.name}", unit="batch", leave=False):
        fast_scored, slow_scored = runs[0].score(fast_batch), runs[1].score(slow_batch)
        a, b = fast.last, slow.last
        assert a is not None and b is not None
        probs_diff = max(probs_diff, float(np.abs(a.probs - b.probs).max()))
        recent_diff = max(recent_diff, float(np.abs(a.recent_probs - b.recent_probs).max()))
        same_shifts &= _shift_keys(fast_scored) == _shift_keys(slow_scored)
        shifts += len(slow_scored.shifts)
    return {
        "max_abs_diff": float(f"{max(probs_diff, recent_diff):.3g}"),
        "max_abs_diff_probs": float(f"{probs_diff:.3g}"),
        "max_abs_diff_recent": float(f"{recent_diff:.3g}"),
        "shifts_equal": same_shifts,
        "reference_shifts": shifts,
    }


def write_profile(
    checkpoint: Checkpoint, detector: ShiftDetector, log: EventLog, config: ScoringBenchConfig, path: Path
) -> None:
    """Where the stage's time goes: cProfile over the scoring calls of one run (its own overhead
    inflates the Python functions relative to PyTorch's kernels; read shares, not absolute times)."""
    profiler = cProfile.Profile()
    timed_run(checkpoint, detector, log, config, profiler)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = "built-in" if filename == "~" else f"{Path(filename).parent.name}/{Path(filename).name}:{line}"
        rows.append((own, cumulative, calls, function, where))
    total = sum(r[0] for r in rows)
    lines = [
        "# Scoring-stage profile",
        "",
        f"cProfile over the scoring calls (`InterestPipeline.score`) of one run on {log.name} "
        "(`python -m bench.scoring --profile ...`), "
        f"{total:.1f} s of profiled time. The profiler's own cost inflates Python functions relative to the "
        "PyTorch and NumPy calls they make: compare shares.",
        "",
        "| function | where | calls | own s | own share | cumulative s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for own, cumulative, calls, function, where in sorted(rows, reverse=True)[:30]:
        lines.append(f"| `{function}` | {where} | {calls:,} | {own:.2f} | {own / total:.1%} | {cumulative:.2f} |")
    path.write_text("\n".join(lines) + "\n")


def _eps(run: dict[str, Any]) -> float:
    return float(run["scoring_eps"])


def _events(log: EventLog, config: ScoringBenchConfig) -> int:
    return log.n_events if config.max_events is None else min(log.n_events, config.max_events)


def run_scoring_bench(
    checkpoint: Checkpoint, detector: ShiftDetector, logs: dict[str, EventLog], config: ScoringBenchConfig
) -> dict[str, Any]:
    tune_for_scoring(config.threads)  # as a worker sets itself up
    datasets: dict[str, dict[str, Any]] = {}
    for name, log in logs.items():
        runs = sorted((timed_run(checkpoint, detector, log, config) for _ in range(config.repeats)), key=_eps)
        result = runs[len(runs) // 2]
        result["scoring_eps_runs"] = [run["scoring_eps"] for run in runs]
        result.update(naive_run(checkpoint, detector, log, config))
        result["speedup_vs_naive"] = round(result["scoring_eps"] / result["naive_eps"], 2)
        result.update(exactness_run(checkpoint, detector, log, config))
        datasets[name] = {"data": log.name, **result}
    head = datasets["head"]
    keys = ("scoring_eps", "naive_eps", "speedup_vs_naive", "stage_us", "cache_bytes_per_user")
    return {
        **{key: head[key] for key in keys},
        "cache_hit_rate": datasets.get("timeslice", head)["cache_hit_rate"],
        "max_abs_diff": max(d["max_abs_diff"] for d in datasets.values()),
        "shifts_equal": all(d["shifts_equal"] for d in datasets.values()),
        "datasets": datasets,
        "config": {
            "batch_size": config.batch_size,
            "naive_events": config.naive_events,
            "threads": config.threads,
            "max_events": config.max_events,
            "repeats": config.repeats,
            "model_version": checkpoint.model_version,
            "recent_events": detector.settings.recent_events,
        },
        "machine": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
    }


def write_markdown(results: dict[str, Any], path: Path, baseline: dict[str, Any] | None) -> None:
    c = results["config"]
    lines = [
        "# Scoring-stage benchmark",
        "",
        f"The worker's scoring stage (`InterestPipeline.score`: token windows, engine, recent interest, detector, "
        f"records) on replayed logs in micro-batches of {c['batch_size']} consecutive events, torch "
        f"{results['machine']['torch']} on {c['threads']} threads. Produced by `python -m bench.scoring` "
        "(`shiftwatch bench scoring`).",
        "",
        "| data | events | scoring events/s | naive events/s | speedup | engine µs | recent µs | detector µs "
        "| records µs | cache hit rate | max abs diff | same shifts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    rows = [(name, d) for name, d in results["datasets"].items()]
    if baseline is not None:
        rows += [(f"{name}, before", d) for name, d in baseline["datasets"].items()]
    for name, d in rows:
        us = d["stage_us"]
        lines.append(
            f"| {name} ({d['data']}) | {d['events']:,} | {d['scoring_eps']:,.0f} | {d['naive_eps']:,.0f} "
            f"| {d['speedup_vs_naive']}x | {us['engine']} | {us['recent']} | {us['detector']} | {us['records']} "
            f"| {d['cache_hit_rate']:.4f} | {d['max_abs_diff']:.2e} | {'yes' if d['shifts_equal'] else 'NO'} |"
        )
    timeslice = results["datasets"].get("timeslice")
    lines += [""]
    if baseline is not None:
        lines.append(
            f"- Before this change (`{baseline['commit']}`, one run, float32 cache): **{baseline['scoring_eps']:,.0f}** "
            f"events/s on the head sample; now **{results['scoring_eps']:,.0f}** "
            f"({results['scoring_eps'] / baseline['scoring_eps']:.1f}x)."
        )
    for name, d in results["datasets"].items():
        lines.append(
            f"- {name}: timed runs {', '.join(f'{eps:,.0f}' for eps in d['scoring_eps_runs'])} events/s (median shown); "
            f"{d['shifts']:,} shifts; the batch-1 reference over the first {d['naive_events']:,} events."
        )
    lines.append(
        "- Stages, µs per event: `engine` the full-history interest (the batch's tokens, engine step, readout, distributions), "
        "`recent` the detector's input, `detector` the shift detector, `records` the update and shift records."
    )
    lines.append(f"- Cache: {results['cache_bytes_per_user']:,} bytes per user.")
    if timeslice is not None:
        cache = timeslice["cache"]
        lines.append(
            f"- Time slice at the default budget ({cache['budget_mb']} MiB, {cache['users_held']:,} users): hit rate "
            f"{timeslice['cache_hit_rate']:.4f} ({cache['hits']:,} hits, {cache['rebuilds']:,} rebuilds, "
            f"{cache['first_events']:,} first events, {cache['evictions']:,} evictions)."
        )
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scoring``: the worker's scoring stage against a full recompute."""
    parser = argparse.ArgumentParser(prog="python -m bench.scoring", description=main.__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help="checkpoint directory")
    parser.add_argument("--head", type=Path, default=HEAD, help="head sample (default: %(default)s)")
    parser.add_argument("--timeslice", type=Path, default=TIMESLICE, help="many-user stream (default: %(default)s)")
    parser.add_argument("--json", type=Path, required=True, help="results file to write")
    parser.add_argument("--markdown", type=Path, help="Markdown table to write (default: beside the JSON)")
    parser.add_argument("--baseline", type=Path, help="an earlier run's JSON to show beside this one")
    parser.add_argument("--batch-size", type=int, default=ScoringBenchConfig.batch_size, help="events per batch")
    parser.add_argument("--naive-events", type=int, default=ScoringBenchConfig.naive_events, help="batch-1 events")
    parser.add_argument("--threads", type=int, default=ScoringBenchConfig.threads, help="torch threads")
    parser.add_argument("--max-events", type=int, help="events per data set (default: all)")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of the head sample's stage here (Markdown)")
    parser.add_argument("--repeats", type=int, default=ScoringBenchConfig.repeats, help="timed runs (median kept)")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    detector = load_detector(args.checkpoint, checkpoint.model_version)
    logs = {"head": load_event_log(args.head, "taobao"), "timeslice": load_event_log(args.timeslice, "taobao")}
    config = ScoringBenchConfig(args.batch_size, args.naive_events, args.threads, args.max_events, args.repeats)
    results = run_scoring_bench(checkpoint, detector, logs, config)
    if args.profile:
        write_profile(checkpoint, detector, logs["head"], config, args.profile)
    results["commit"] = _commit()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, args.markdown or args.json.with_suffix(".md"), baseline)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    return 0


def _commit() -> str:
    import subprocess

    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
