"""``shiftwatch evaluate``: a checkpoint against the baselines on its test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.cli.common import FORMAT_HELP


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a checkpoint with the baselines on its test split",
        description="Evaluate a checkpoint on the test split it was trained for, against streaming baselines.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint directory to evaluate")
    parser.add_argument(
        "--data", required=True, type=Path, help="the event log it was trained on (its test split is scored)"
    )
    parser.add_argument("--format", choices=["taobao", "s3rec"], help=FORMAT_HELP)
    parser.add_argument("--json", required=True, type=Path, help="where to write the results JSON")
    parser.add_argument("--report", type=Path, help="Markdown report to write (a PNG plot lands beside it)")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from model.data.loaders import load_event_log
    from model.net.checkpoint import load_checkpoint
    from model.training.evaluate import evaluate
    from model.training.report import write_report

    checkpoint = load_checkpoint(args.checkpoint)
    log = load_event_log(args.data, args.format)
    result = evaluate(checkpoint, log)
    result["training"] = checkpoint.training
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.report:
        write_report(result, args.report)
    print(json.dumps({"models": result["models"], "ci95": result["ci95"]}, indent=1))
    return 0
