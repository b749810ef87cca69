"""The ``shiftwatch`` command line: one module per command group."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from stream.cli import (
    bench,
    broker,
    demand,
    demo,
    detect_eval,
    evaluate,
    forget,
    replay,
    topics,
    train,
    triggers,
    worker,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftwatch", description="Streaming interest-shift detection.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    train.add(subparsers)
    evaluate.add(subparsers)
    detect_eval.add(subparsers)
    broker.add(subparsers)
    topics.add(subparsers)
    worker.add(subparsers)
    triggers.add(subparsers)
    demand.add(subparsers)
    forget.add(subparsers)
    replay.add(subparsers)
    demo.add(subparsers)
    bench.add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from model.data.loaders import DataFormatError
    from model.net.checkpoint import CheckpointError
    from stream.ops.broker import BrokerError

    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (BrokerError, CheckpointError, DataFormatError, FileNotFoundError, ValueError) as error:  # RuleError too
        print(f"shiftwatch {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
