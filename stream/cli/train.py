"""``shiftwatch train``: fit the interest model on an event log, then calibrate its shift detector."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CALIBRATION_SHARE = 0.4  # of --max-minutes, left for calibrating the detector after training
CALIBRATION_FIT_S = 3.0  # kept after the threshold search for fitting the confidence on its alarms


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the interest model on an event log",
        description=(
            "Train the interest Transformer. Logs with timestamps are split by time "
            "(train < T1 <= validation < T2 <= test); order-only logs leave-one-out. Then tune and calibrate "
            "the shift detector on spliced validation histories and save it beside the checkpoint "
            "(detector.json), so that a worker serving the checkpoint gives every shift a confidence; "
            "`shiftwatch detect-eval` does the full evaluation and retunes it."
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
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="wall-clock budget for the whole command; calibration gets the last "
        f"{round(CALIBRATION_SHARE * 100)}%% of it (default: none)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--model", default="{}", help="model config overrides as JSON, e.g. '{\"window\": 32}'")
    parser.add_argument(
        "--calibration-histories",
        type=int,
        default=100,
        help="spliced validation histories (and as many controls) to calibrate the detector on (default: %(default)s)",
    )
    parser.add_argument(
        "--no-calibrate", action="store_true", help="skip the detector: shifts then carry confidence null"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    started = time.monotonic()
    from dataclasses import replace

    from model.data.loaders import load_event_log
    from model.data.splits import SplitSpec, parse_time
    from model.net.checkpoint import save_checkpoint
    from model.training.train import TrainConfig, train

    log = load_event_log(args.data, args.format)
    print(f"{args.data}: {len(log.users):,} users, {log.n_events:,} events; {log.report.summary()}", file=sys.stderr)
    split = SplitSpec.for_log(
        log,
        parse_time(args.t1) if args.t1 else None,
        parse_time(args.t2) if args.t2 else None,
    )
    overrides = {
        name: getattr(args, name)
        for name in ("epochs", "patience", "batch_size", "learning_rate", "seed")
        if getattr(args, name) is not None
    }
    if args.max_minutes is not None:  # counted from the command's start: loading the log is part of it
        training_minutes = args.max_minutes * (1 if args.no_calibrate else 1 - CALIBRATION_SHARE)
        overrides["max_minutes"] = max(0.0, training_minutes - (time.monotonic() - started) / 60)
    config = replace(TrainConfig(), **overrides)
    result = train(log, split, json.loads(args.model), config, progress=not args.quiet)
    version = save_checkpoint(result.checkpoint, args.out)
    detector = None
    if not args.no_calibrate:
        from model.online.detector import save_detector
        from model.shift_eval.harness import calibrated_detector

        calibrating = time.monotonic()
        deadline = None if args.max_minutes is None else started + 60 * args.max_minutes - CALIBRATION_FIT_S
        tuned, provenance = calibrated_detector(
            result.checkpoint, log, args.calibration_histories, not args.quiet, deadline
        )
        detector = str(save_detector(tuned, args.out, provenance))
        print(f"detector tuned and calibrated in {time.monotonic() - calibrating:.0f} s: {detector}", file=sys.stderr)
    summary = {
        "checkpoint": str(args.out),
        "model_version": version,
        "split": split.to_dict(),
        **result.checkpoint.training,
        "validation": result.checkpoint.metrics["validation"],
        "detector": detector,
    }
    print(json.dumps(summary, indent=1))
    return 0
