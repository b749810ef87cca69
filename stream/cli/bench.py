"""``shiftwatch bench``: run a benchmark of the source checkout (``bench/``, not in the wheel)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCHMARKS = {
    "scoring": "the worker's scoring stage against a full recompute (bench/scoring.py)",
    "engine": "the incremental engine against recomputing each window (bench/engine.py)",
    "e2e": "one worker end to end on the embedded broker (bench/e2e.py)",
    "soak": "a long run with memory sampled (bench/soak.py)",
}
CHECKOUT = Path(__file__).resolve().parents[2]


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark from the source checkout",
        description="Run `python -m bench.NAME ARGS...` in the source checkout this command is installed from "
        "(the benchmarks are not part of the package); `shiftwatch bench NAME --help` lists a benchmark's options. "
        + "; ".join(f"{name}: {what}" for name, what in BENCHMARKS.items())
        + ".",
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its options, e.g. --json OUT")
    parser.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    if not (CHECKOUT / "bench" / f"{args.name}.py").exists():
        raise FileNotFoundError(f"no bench/{args.name}.py under {CHECKOUT}: the benchmarks run from a source checkout")
    return subprocess.run([sys.executable, "-m", f"bench.{args.name}", *args.args], cwd=CHECKOUT).returncode
