"""``shiftwatch detect-eval``: tune, calibrate and score the shift detectors."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from stream.cli.common import add_checkpoint_and_data


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect-eval",
        help="evaluate interest-shift detectors on spliced and naturally labelled histories",
        description=(
            "Tune each shift detector on the validation users and score it on the test users, on spliced "
            "histories (known change points) and on real histories labelled offline. Calibrates the "
            "transformer detector's confidence and saves it as detector.json in the checkpoint directory, "
            "where the worker loads it."
        ),
    )
    add_checkpoint_and_data(parser, "event log to splice and label histories from (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="Markdown report to write (two PNG plots land beside it)")
    parser.add_argument(
        "--tolerance",
        type=int,
        default=10,
        help="events after a change within which an alarm detects it (default: %(default)s)",
    )
    parser.add_argument(
        "--spliced",
        type=int,
        default=250,
        help="spliced histories per split, and as many controls (default: %(default)s)",
    )
    parser.add_argument("--users", type=int, help="use only the first N users of the log")
    parser.add_argument("--seed", type=int, default=0, help="seed of the spliced histories (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="processes for the parameter search (default: up to 4 CPUs)")
    parser.add_argument(
        "--no-save-detector", action="store_true", help="do not write detector.json into the checkpoint"
    )
    parser.set_defaults(handler=_detect_eval)


def _detect_eval(args: argparse.Namespace) -> int:
    from model.data.loaders import load_event_log
    from model.net.checkpoint import load_checkpoint
    from model.online.detector import save_detector
    from model.shift_eval.harness import EvalSettings, detect_eval
    from model.shift_eval.report import write_detect_report

    checkpoint = load_checkpoint(args.checkpoint)
    log = load_event_log(args.data, args.format)
    if args.users:
        log = log.first_users(args.users)
    settings = EvalSettings(tolerance=args.tolerance, spliced=args.spliced, seed=args.seed)
    if args.workers:
        settings = replace(settings, workers=args.workers)
    result, detector = detect_eval(checkpoint, log, settings)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.report:
        write_detect_report(result, args.report)
    if not args.no_save_detector:
        provenance = {"dataset": log.name, "tuned_on": "spliced validation users", "results": str(args.json)}
        print(f"detector tuned and calibrated: {save_detector(detector, args.checkpoint, provenance)}", file=sys.stderr)
    summary = {
        benchmark: {
            name: {k: row[k] for k in ("precision", "recall", "f1", "median_delay", "false_alarms_per_1k")}
            for name, row in result[benchmark].items()
        }
        for benchmark in ("spliced", "natural")
    }
    print(json.dumps(summary, indent=1))
    return 0
