"""``shiftwatch triggers``: the marketing-trigger service."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.common import add_loglevel, run_app


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triggers",
        help="run the marketing-trigger service: interest.shifts -> rules -> marketing.triggers",
        description="Apply the rules of a TOML file (see deploy/triggers.toml) to every interest shift and publish "
        "marketing.triggers, at most one per user and rule per cooldown. Kafka and state settings as for the worker.",
    )
    parser.add_argument("--rules", required=True, type=Path, help="TOML rules file; refused at start when invalid")
    add_loglevel(parser)
    parser.set_defaults(handler=_triggers)


def _triggers(args: argparse.Namespace) -> int:
    from stream.services.rules import load_rules
    from stream.services.triggers import create_triggers_app
    from stream.settings import Settings

    rules = load_rules(args.rules)  # a bad file stops here, before anything connects
    return run_app(create_triggers_app(Settings.from_env(), rules), args.loglevel)
