"""Where a worker's time goes: py-spy samples of one worker draining a pre-loaded backlog.

Run ``python -m bench.profile_worker`` (needs ``py-spy``: ``.venv/bin/pip install
py-spy==0.4.3``; not a project dependency). It starts the embedded broker, replays the
shipped Taobao sample, starts a worker, lets it warm up, samples it with py-spy for
``--seconds`` and writes ``bench/results/profile.md``: the share of samples per thread (the
event loop, the default executor's threads that score, Faust's consumer thread) and the functions with
the most samples, inclusive, grouped by function.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model.data.loaders import load_event_log
from stream.ops.admin import create_topics
from stream.ops.broker import EmbeddedBroker
from stream.ops.process import WorkerProcess
from stream.ops.replay import replay
from stream.settings import Settings

DEFAULT_DATA = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
WRAPPERS = re.compile(
    r"^(BaseEventLoop\.|Thread\.|_WorkItem\.|Handle\._run|Agent\._execute_actor|Worker\.execute|EpollSelector|"
    r"no_grad|_worker |main |<module>|_run_code|_run_module_as_main)"
)


def thread_role(name: str) -> str:
    """What a worker thread py-spy names does: asyncio's default executor may run several."""
    if name == "MainThread":
        return "event loop: Faust stream, admission, publishing, rows"
    if name.startswith("shiftwatch-scoring"):
        return "scoring thread: engine step, recent interest, detector, updates, rows encoded"
    if name.startswith("asyncio_"):
        return "default executor: model watcher"
    return "other: Faust consumer thread"


def sample(data: Path, checkpoint: Path, seconds: int, warmup_s: float, rate: int) -> Path:
    """Raw py-spy samples (one collapsed stack per line) of a worker under a full backlog."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy==0.4.3")
    work = Path(tempfile.mkdtemp(prefix="shiftwatch-profile-"))
    broker = EmbeddedBroker(work / "broker")
    bootstrap = broker.start()
    worker = None
    try:
        settings = Settings.from_env()
        asyncio.run(create_topics(bootstrap, settings.erasure_deadline_s, settings.partitions))
        asyncio.run(replay(load_event_log(data), bootstrap))
        worker = WorkerProcess(
            work / "worker.log",
            kafka_bootstrap=bootstrap,
            checkpoint=checkpoint,
            data_dir=work / "worker",
            partitions=settings.partitions,
        ).start()
        time.sleep(warmup_s)
        raw = Path(tempfile.mkstemp(prefix="shiftwatch-samples-", suffix=".txt")[1])
        pid = str(worker.pid)
        command = [
            spy,
            "record",
            "-p",
            pid,
            "-d",
            str(seconds),
            "-r",
            str(rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--threads",
        ]
        subprocess.run(command, check=True, capture_output=True)
        return raw
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarise(raw: Path, seconds: int, rate: int, top: int = 20) -> str:
    by_thread: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        n = int(count)
        total += n
        thread, *frames = stack.split(";")
        by_thread[re.sub(r"^thread \(\d+\): ", "", thread)] += n
        functions = [re.sub(r" \((?:.*/site-packages/|.*?/)?(.+?):\d+\)$", r" (\1)", frame) for frame in frames]
        for function in set(functions):
            if not WRAPPERS.match(function):
                inclusive[function] += n
        if functions:
            own[functions[-1]] += n
    busy_cores = total / (seconds * rate)

    def table(title: str, counts: collections.Counter[str]) -> list[str]:
        rows = [f"| `{function}` | {n / total:.1%} |" for function, n in counts.most_common(top)]
        return [f"| {title} | share of samples |", "|---|---:|", *rows, ""]

    threads = [f"| {name} ({thread_role(name)}) | {n / total:.1%} |" for name, n in by_thread.most_common()]
    return "\n".join(
        [
            "# Worker profile",
            "",
            f"py-spy, {seconds} s at {rate} Hz of one worker draining the pre-loaded Taobao sample "
            f"(`python -m bench.profile_worker`). {total:,} samples of busy threads: on average "
            f"{busy_cores:.2f} of the machine's {os.cpu_count()} cores were busy.",
            "",
            "| thread | share of samples |",
            "|---|---:|",
            *threads,
            "",
            *table("function, inclusive", inclusive),
            *table("function, own time", own),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"))
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before sampling starts")
    parser.add_argument("--rate", type=int, default=50, help="samples per second")
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile.md"))
    args = parser.parse_args()
    raw = sample(args.data, args.checkpoint, args.seconds, args.warmup, args.rate)
    args.out.write_text(summarise(raw, args.seconds, args.rate))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
