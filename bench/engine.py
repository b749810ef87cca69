"""Benchmark of the incremental engine against recomputing each user's window.

On replayed real sequences, one run measures, on the same events:

(a) ``naive``: per event, a full forward over the user's window (the last
    ``receptive_field`` events), batch 1;
(b) ``batched_recompute``: the same full forward for a batch of users at once;
(c) ``incremental``: :class:`model.online.engine.IncrementalEngine` with every user cached;
(d) ``miss``: the engine with every user evicted, so each event rebuilds from history.

Measured events sit at positions ``receptive_field .. receptive_field + steps - 1`` of the
users long enough to have them, so every window is full: the steady state of a worker.
Batches hold distinct users (round-robin over users), 256 by default: the worker's
micro-batches are larger (512), and smaller batches pay more fixed cost per event. The engine is warmed, untimed, on
each user's earlier events.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.data.loaders import EventLog
from model.data.vocab import TokenSequence
from model.net.batching import pad_sequences
from model.net.checkpoint import Checkpoint
from model.net.transformer import InterestTransformer
from model.online.engine import EventTokens, IncrementalEngine, InMemoryHistory, UserEvent


@dataclass(frozen=True)
class EngineBenchConfig:
    """``steps`` measured events per user, ``batch_size`` users per batch, at most
    ``naive_events`` events for the slow batch-1 variant, ``top_k`` items per output."""

    steps: int = 4
    batch_size: int = 256
    naive_events: int = 512
    top_k: int = 10
    max_users: int | None = None


@dataclass(frozen=True)
class Timing:
    events: int
    batch_seconds: tuple[float, ...]

    def summary(self) -> dict[str, float]:
        ms = np.asarray(self.batch_seconds) * 1000
        return {
            "events": self.events,
            "batches": len(ms),
            "eps": round(self.events / float(ms.sum() / 1000), 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
        }


@torch.no_grad()
def recompute(
    model: InterestTransformer, windows: Sequence[TokenSequence], last_positions: Sequence[int], top_k: int
) -> np.ndarray:
    """Interest distributions and top-k item scores after the last event of each window, side
    by side in one ``(B, n_categories + top_k)`` array, by a full forward over the window."""
    lengths = torch.tensor([len(w) for w in windows])
    width = int(lengths.max())
    batch = pad_sequences(windows, (torch.tensor(last_positions) - lengths + 1).tolist())
    encoding = model.encode(batch)
    last = lengths - 1
    hidden = encoding.hidden[torch.arange(len(windows)), last]
    offsets = last[:, None] - torch.arange(width)[None, :]
    probs, _ = model.interest(hidden[:, None], encoding.copy_keys, offsets[:, None], batch.categories)
    probs = probs[:, 0]
    top_scores, _ = model.top_items(hidden, top_k)
    return torch.cat([probs, top_scores], dim=1).numpy()


def _event(user: str, tokens: TokenSequence, position: int) -> UserEvent:
    return UserEvent(
        user,
        position,
        EventTokens(
            int(tokens.items[position]),
            int(tokens.categories[position]),
            int(tokens.behaviors[position]),
            int(tokens.gaps[position]),
        ),
    )


def _outputs(engine: IncrementalEngine, batch: Sequence[UserEvent], history: InMemoryHistory) -> np.ndarray:
    result = engine.step(batch, history)
    return np.concatenate([result.category_probs, result.top_item_scores], axis=1)


def _timed(
    batches: Sequence[Sequence[UserEvent]],
    run: Callable[[Sequence[UserEvent]], np.ndarray],
    desc: str,
    before_each: Callable[[], None] | None = None,
) -> tuple[Timing, list[np.ndarray]]:
    seconds, outputs = [], []
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
        if before_each is not None:
            before_each()
        started = time.perf_counter()
        outputs.append(run(batch))
        seconds.append(time.perf_counter() - started)
    return Timing(sum(len(b) for b in batches), tuple(seconds)), outputs


def run_engine_bench(
    checkpoint: Checkpoint, log: EventLog, config: EngineBenchConfig = EngineBenchConfig()
) -> dict[str, Any]:
    model = checkpoint.model.eval()
    version = checkpoint.model_version
    field = model.config.receptive_field
    tokens = {
        user.user_id: checkpoint.tokenizer.encode(user) for user in log.users if len(user) >= field + config.steps
    }
    users = sorted(tokens)[: config.max_users]
    if not users:
        raise ValueError(f"{log.name}: no user has the {field + config.steps} events the benchmark needs")
    history = InMemoryHistory({u: tokens[u] for u in users})
    measured = [
        [_event(u, tokens[u], field + step) for u in users[i : i + config.batch_size]]
        for step in range(config.steps)
        for i in range(0, len(users), config.batch_size)
    ]

    def windows(batch: Sequence[UserEvent]) -> tuple[list[TokenSequence], list[int]]:
        return [tokens[e.user].slice(e.position - field + 1, e.position + 1) for e in batch], [
            e.position for e in batch
        ]

    def recomputed(batch: Sequence[UserEvent]) -> np.ndarray:
        return recompute(model, *windows(batch), config.top_k)

    naive_batches = [[e] for batch in measured for e in batch][: config.naive_events]
    naive, _ = _timed(naive_batches, recomputed, "(a) naive")
    batched, reference = _timed(measured, recomputed, "(b) batched recompute")

    def warmed(cache_dtype: torch.dtype) -> IncrementalEngine:
        engine = IncrementalEngine(model, version, cache_dtype=cache_dtype, top_k=config.top_k)
        for position in tqdm(range(field), desc="warm-up", unit="step", leave=False):
            for i in range(0, len(users), config.batch_size):
                engine.step([_event(u, tokens[u], position) for u in users[i : i + config.batch_size]], history)
        return engine

    engine = warmed(torch.float32)
    incremental, incremental_out = _timed(measured, lambda b: _outputs(engine, b, history), "(c) incremental")
    hits_only = engine.stats.rebuilds == 0 and engine.stats.evictions == 0
    cold = IncrementalEngine(model, version, top_k=config.top_k)
    miss, miss_out = _timed(measured, lambda b: _outputs(cold, b, history), "(d) miss", before_each=cold.clear)
    half_engine = warmed(torch.bfloat16)
    _, half_out = _timed(measured, lambda b: _outputs(half_engine, b, history), "(c') bfloat16 cache")

    def worst(outputs: list[np.ndarray]) -> float:
        return float(max(np.abs(o - r).max() for o, r in zip(outputs, reference)))

    results = {
        "naive_eps": naive.summary()["eps"],
        "batched_recompute_eps": batched.summary()["eps"],
        "incremental_eps": incremental.summary()["eps"],
        "miss_eps": miss.summary()["eps"],
        "speedup_vs_naive": round(incremental.summary()["eps"] / naive.summary()["eps"], 2),
        "speedup_vs_batched": round(incremental.summary()["eps"] / batched.summary()["eps"], 2),
        "cache_bytes_per_user": engine.bytes_per_user,
        "batch_p99_ms": incremental.summary()["p99_ms"],
        "variants": {
            "naive": naive.summary(),
            "batched_recompute": batched.summary(),
            "incremental": incremental.summary(),
            "miss": miss.summary(),
        },
        "max_abs_diff_vs_recompute": {  # interest probabilities and top-k item scores
            "incremental_fp32": worst(incremental_out),
            "miss_fp32": worst(miss_out),
            "incremental_bfloat16_cache": worst(half_out),
        },
        "bfloat16_cache_bytes_per_user": half_engine.bytes_per_user,
        "incremental_all_hits": hits_only,
        "setup": {
            "dataset": log.name,
            "model_version": version,
            "model": model.config.to_dict(),
            "receptive_field": field,
            "users": len(users),
            "batch_size": config.batch_size,
            "steps_per_user": config.steps,
            "top_k": config.top_k,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }
    return results


def write_markdown(results: dict[str, Any], path: Path) -> None:
    variants = results["variants"]
    names = {
        "naive": "(a) naive: full window forward, batch 1",
        "batched_recompute": "(b) batched full recompute",
        "incremental": "(c) batched incremental, cache hits",
        "miss": "(d) batched incremental, cache misses (rebuild)",
    }
    setup = results["setup"]
    lines = [
        "# Incremental engine benchmark",
        "",
        f"{setup['dataset']}, {setup['users']} users x {setup['steps_per_user']} events at full windows "
        f"(receptive field {setup['receptive_field']}), batches of {setup['batch_size']}, "
        f"torch {setup['torch']} on {setup['torch_threads']} threads. Produced by `python -m bench.engine`.",
        "",
        "| variant | events/s | batch p50 ms | batch p99 ms | events |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in names.items():
        v = variants[key]
        lines.append(f"| {label} | {v['eps']:,.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['events']} |")
    diffs = results["max_abs_diff_vs_recompute"]
    lines += [
        "",
        f"- incremental vs naive: **{results['speedup_vs_naive']}x**; vs batched recompute: "
        f"**{results['speedup_vs_batched']}x**",
        f"- cache per user: {results['cache_bytes_per_user']:,} bytes fp32, "
        f"{results['bfloat16_cache_bytes_per_user']:,} bytes bfloat16",
        "- max |difference| from recompute (interest probabilities, top-k item scores): "
        f"incremental {diffs['incremental_fp32']:.2e}, "
        f"rebuild {diffs['miss_fp32']:.2e}, bfloat16 cache {diffs['incremental_bfloat16_cache']:.2e}",
        "",
    ]
    path.write_text("\n".join(lines))


def save(results: dict[str, Any], json_path: Path, markdown_path: Path | None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        write_markdown(results, markdown_path)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.engine``: naive, batched-recompute, incremental (hits) and rebuild (misses) inference."""
    import argparse

    from model.data.loaders import load_event_log
    from model.net.checkpoint import load_checkpoint
    from stream.cli.common import add_checkpoint_and_data

    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=main.__doc__)
    add_checkpoint_and_data(parser, "event log to replay (default: %(default)s)")
    parser.add_argument("--markdown", type=Path, help="Markdown table to write (default: beside the JSON)")
    parser.add_argument("--batch-size", type=int, default=256, help="users per batch (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=4, help="measured events per user (default: %(default)s)")
    parser.add_argument("--naive-events", type=int, default=512, help="events timed for (a) (default: %(default)s)")
    parser.add_argument("--max-users", type=int, help="replay at most this many users (default: all long enough)")
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    log = load_event_log(args.data, args.format)
    config = EngineBenchConfig(
        steps=args.steps, batch_size=args.batch_size, naive_events=args.naive_events, max_users=args.max_users
    )
    results = run_engine_bench(checkpoint, log, config)
    save(results, args.json, args.markdown or args.json.with_suffix(".md"))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
