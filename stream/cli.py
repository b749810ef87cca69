"""The ``shiftwatch`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the interest model on an event log",
        description=(
            "Train the interest Transformer. Logs with timestamps are split by time "
            "(train < T1 <= validation < T2 <= test); order-only logs leave-one-out."
        ),
    )
    parser.add_argument("--data", required=True, type=Path, help="Taobao CSV or S3-Rec sequence file (.gz ok)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    parser.add_argument("--format", choices=["taobao", "s3rec"], help="force the input format (default: detect)")
    parser.add_argument("--t1", help="validation start: ISO 8601 with offset or epoch seconds (default: 70%% quantile)")
    parser.add_argument("--t2", help="test start: ISO 8601 with offset or epoch seconds (default: 85%% quantile)")
    parser.add_argument("--epochs", type=int, help="maximum epochs (default 200)")
    parser.add_argument("--patience", type=int, help="epochs without validation gain before stopping (default 10)")
    parser.add_argument("--batch-size", type=int, help="sequence pieces per step (default 64)")
    parser.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget for training")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--model", default="{}", help='model config overrides as JSON, e.g. \'{"window": 32}\'')
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from model.checkpoint import save_checkpoint
    from model.data import load_event_log
    from model.splits import SplitSpec, parse_time
    from model.train import TrainConfig, train

    log = load_event_log(args.data, args.format)
    print(f"{args.data}: {len(log.users):,} users, {log.n_events:,} events; {log.report.summary()}", file=sys.stderr)
    split = SplitSpec.for_log(
        log,
        parse_time(args.t1) if args.t1 else None,
        parse_time(args.t2) if args.t2 else None,
    )
    overrides = {
        name: getattr(args, name)
        for name in ("epochs", "patience", "batch_size", "learning_rate", "max_minutes", "seed")
        if getattr(args, name) is not None
    }
    config = replace(TrainConfig(), **overrides)
    result = train(log, split, json.loads(args.model), config, progress=not args.quiet)
    version = save_checkpoint(result.checkpoint, args.out)
    summary = {
        "checkpoint": str(args.out),
        "model_version": version,
        "split": split.to_dict(),
        **result.checkpoint.training,
        "validation": result.checkpoint.metrics["validation"],
    }
    print(json.dumps(summary, indent=1))
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a checkpoint with the baselines on its test split",
        description="Evaluate a checkpoint on the test split it was trained for, against streaming baselines.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--format", choices=["taobao", "s3rec"])
    parser.add_argument("--json", required=True, type=Path, help="where to write the results JSON")
    parser.add_argument("--report", type=Path, help="Markdown report to write (a PNG plot lands beside it)")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from model.checkpoint import load_checkpoint
    from model.data import load_event_log
    from model.evaluate import evaluate
    from model.report import write_report

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftwatch", description="Streaming interest-shift detection.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from model.checkpoint import CheckpointError
    from model.data import DataFormatError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CheckpointError, DataFormatError, FileNotFoundError, ValueError) as error:
        print(f"shiftwatch {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
