"""``shiftwatch worker``: the stream worker."""

from __future__ import annotations

import argparse

from stream.cli.common import add_loglevel, run_app


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the stream worker (settings from environment variables)",
        description="Consume clickstream.events, publish interest.updates and interest.shifts. Configure with "
        "KAFKA_BOOTSTRAP and SHIFTWATCH_* variables (docs/configuration.md).",
    )
    add_loglevel(parser)
    parser.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    from stream.settings import Settings
    from stream.worker.worker import create_app

    return run_app(create_app(Settings.from_env()), args.loglevel)
