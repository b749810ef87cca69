"""``shiftwatch demand``: the inventory-demand service."""

from __future__ import annotations

import argparse

from stream.cli.common import add_loglevel, run_app


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demand",
        help="run the inventory-demand service: interest.shifts -> windows per category -> inventory.category-demand",
        description="Count, per category and event-time window (tumbling and hopping), the users shifting in and out "
        "and the probability mass gained and lost; publish each window to inventory.category-demand when it closes; "
        "serve /demand/top-movers. Window sizes: SHIFTWATCH_DEMAND_* (docs/configuration.md); Kafka and state "
        "settings as for the worker.",
    )
    add_loglevel(parser)
    parser.set_defaults(handler=_demand)


def _demand(args: argparse.Namespace) -> int:
    from stream.services.demand import create_demand_app
    from stream.settings import Settings

    return run_app(create_demand_app(Settings.from_env()), args.loglevel)
