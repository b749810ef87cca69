"""``shiftwatch topics``: create the topics; write or check their JSON Schemas."""

from __future__ import annotations

import argparse
import sys

from stream.cli.common import bootstrap


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="create ShiftWatch's topics; write their JSON Schemas")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="create every topic that does not exist yet, with SHIFTWATCH_PARTITIONS partitions, and give every one "
        "the configs of the erasure deadline (SHIFTWATCH_ERASURE_DEADLINE_S; idempotent; refuses a topic that exists "
        "with another partition count)",
    )
    create.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    create.add_argument(
        "--app-id", help="also update the table changelogs of this app id's services (default: SHIFTWATCH_APP_ID)"
    )
    create.set_defaults(handler=_topics_create)
    schemas = actions.add_parser("schemas", help="write topics/schemas/*.json from the records, or --check them")
    schemas.add_argument("--check", action="store_true", help="exit 1 if a schema file is out of date")
    schemas.set_defaults(handler=_topics_schemas)


def _topics_create(args: argparse.Namespace) -> int:
    import asyncio

    from stream.ops.admin import create_topics
    from stream.settings import Settings

    settings = Settings.from_env()
    created = create_topics(
        bootstrap(args), settings.erasure_deadline_s, settings.partitions, args.app_id or settings.app_id
    )
    for name, outcome in asyncio.run(created).items():
        print(f"{name}: {outcome}")
    return 0


def _topics_schemas(args: argparse.Namespace) -> int:
    from topics.schema import stale_schema_files, write_schema_files

    if args.check:
        stale = stale_schema_files()
        for name in stale:
            print(f"out of date: topics/schemas/{name}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schema_files():
        print(path)
    return 0
