"""``shiftwatch demo``: the whole service on the embedded broker and the shipped sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.common import DEFAULT_DATA


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole service on the embedded broker and the shipped Taobao sample",
        description="Start Kafka, create topics, train a model and tune its shift detector if none exist, run a worker "
        "and the triggers (deploy/triggers.toml) and demand services, replay the sample, print a live feed of interest "
        "shifts, end with a summary (categories gaining and losing interest, triggers fired, demand windows), stop "
        "everything.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("checkpoints/taobao"),
        help="checkpoint to serve; trained and calibrated first if missing (default: %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="event log to replay (default: %(default)s)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from stream.ops.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(data=args.data, checkpoint=args.checkpoint))
