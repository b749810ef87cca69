"""``shiftwatch replay``: produce an event log into the input topic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stream.cli.common import DEFAULT_DATA, FORMAT_HELP, bootstrap


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="produce an event log into clickstream.events in event-time order")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="event log to replay (default: %(default)s)")
    parser.add_argument("--format", choices=["taobao", "s3rec"], help=FORMAT_HELP)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second")
    pace.add_argument("--speedup", type=float, help="replay event time X times faster than it happened")
    pace.add_argument("--max", action="store_true", help="as fast as the broker takes them (the default)")
    parser.add_argument("--users", type=int, help="replay only the first N users")
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    from model.data.loaders import load_event_log
    from stream.ops.replay import Pace, replay

    log = load_event_log(args.data, args.format)
    if args.users is not None:
        log = log.first_users(args.users)
    sent = asyncio.run(replay(log, bootstrap(args), Pace(rate=args.rate, speedup=args.speedup)))
    print(f"produced {sent:,} events from {args.data}", file=sys.stderr)
    return 0
