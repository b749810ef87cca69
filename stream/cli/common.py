"""What several commands share: default paths, log levels, common options, running a Faust app."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a command imports Faust (a second or more) only when it runs an app
    import faust

DEFAULT_DATA = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
LOGLEVELS = ["crit", "error", "warn", "info", "debug"]


def add_checkpoint_and_data(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The options of commands that run a checkpoint over a log and write results JSON."""
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help=CHECKPOINT_HELP)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=data_help)
    parser.add_argument("--format", choices=["taobao", "s3rec"], help=FORMAT_HELP)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results JSON")


def bootstrap(args: argparse.Namespace) -> str:
    from stream.settings import Settings

    return getattr(args, "bootstrap", None) or Settings.from_env().kafka_bootstrap


FORMAT_HELP = "input format: taobao (UserBehavior CSV) or s3rec (sequences); default: detected from the file"
CHECKPOINT_HELP = "checkpoint directory (default: %(default)s)"


def add_loglevel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loglevel", default="warn", choices=LOGLEVELS, help="log level (default: %(default)s)")


def run_app(app: faust.App, loglevel: str) -> int:
    """Run a Faust app in this process until it is stopped."""
    from stream.runtime.recovery import QuietWorker

    QuietWorker(app, loglevel=loglevel).execute_from_commandline()
    return 0
