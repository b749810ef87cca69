"""``shiftwatch forget``: erase a user."""

from __future__ import annotations

import argparse
import sys

from stream.cli.common import bootstrap


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "forget",
        help="erase a user: their row, the worker's caches, and a tombstone on interest.updates",
        description="Send a forget request for USER_ID (the raw id, as in the user's events) to "
        "privacy.forget-requests. "
        "The worker that owns the user deletes their table row (a tombstone on its changelog), drops them from its "
        "caches and publishes a tombstone for them on the compacted interest.updates; the triggers service deletes "
        "their rate-limit row. Shifts already published age out with interest.shifts' retention.",
    )
    parser.add_argument("user_id", help="the user's raw id, as in their events")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    parser.set_defaults(handler=_forget)


def _forget(args: argparse.Namespace) -> int:
    import asyncio

    from stream.ops.admin import send_forget_request

    partition, offset = asyncio.run(send_forget_request(bootstrap(args), args.user_id))
    print(f"forget request for user {args.user_id!r} sent (partition {partition}, offset {offset})", file=sys.stderr)
    return 0
