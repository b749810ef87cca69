"""The ``shiftwatch`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
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


DEFAULT_DATA = Path("data/taobao/UserBehavior_head_84475rows.csv.gz")
LOGLEVELS = ["crit", "error", "warn", "info", "debug"]


def _add_checkpoint_and_data(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The options of commands that run a checkpoint over a log and write results JSON."""
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help="(default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=data_help)
    parser.add_argument("--format", choices=["taobao", "s3rec"], help="force the input format (default: detect)")
    parser.add_argument("--json", required=True, type=Path, help="where to write the results JSON")


def _add_detect_eval(subparsers: argparse._SubParsersAction) -> None:
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
    _add_checkpoint_and_data(parser, "(default: %(default)s)")
    parser.add_argument("--report", type=Path, help="Markdown report to write (two PNG plots land beside it)")
    parser.add_argument("--tolerance", type=int, default=10, help="events after a change within which an alarm detects it (default: %(default)s)")
    parser.add_argument("--spliced", type=int, default=250, help="spliced histories per split, and as many controls (default: %(default)s)")
    parser.add_argument("--users", type=int, help="use only the first N users of the log")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, help="processes for the parameter search (default: up to 4 CPUs)")
    parser.add_argument("--no-save-detector", action="store_true", help="do not write detector.json into the checkpoint")
    parser.set_defaults(handler=_detect_eval)


def _detect_eval(args: argparse.Namespace) -> int:
    from model.checkpoint import load_checkpoint
    from model.data import load_event_log
    from model.detect_eval import EvalSettings, detect_eval
    from model.detect_report import write_detect_report
    from model.detector import save_detector

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
        benchmark: {name: {k: row[k] for k in ("precision", "recall", "f1", "median_delay", "false_alarms_per_1k")} for name, row in result[benchmark].items()}
        for benchmark in ("spliced", "natural")
    }
    print(json.dumps(summary, indent=1))
    return 0


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks; results as JSON and Markdown")
    benches = parser.add_subparsers(dest="bench", required=True)
    engine = benches.add_parser(
        "engine",
        help="incremental engine vs full recompute on replayed sequences",
        description="Naive, batched-recompute, incremental (hits) and rebuild (misses) inference, side by side.",
    )
    _add_checkpoint_and_data(engine, "event log to replay (default: %(default)s)")
    engine.add_argument("--markdown", type=Path, help="Markdown table to write (default: beside the JSON)")
    engine.add_argument("--batch-size", type=int, default=256, help="users per batch (default: %(default)s)")
    engine.add_argument("--steps", type=int, default=4, help="measured events per user (default: %(default)s)")
    engine.add_argument("--naive-events", type=int, default=512, help="events timed for (a) (default: %(default)s)")
    engine.add_argument("--max-users", type=int, help="replay at most this many users (default: all long enough)")
    engine.set_defaults(handler=_bench_engine)
    e2e = benches.add_parser(
        "e2e",
        help="one worker end to end on a real broker, beside a raw consumer and a trivial Faust agent",
        description="Sustained events/s and produce-to-update latency of one worker process (embedded broker "
        "unless KAFKA_BOOTSTRAP is set), with the raw aiokafka and trivial-Faust ceilings from the same run.",
    )
    e2e.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help="(default: %(default)s)")
    e2e.add_argument("--data", type=Path, default=DEFAULT_DATA, help="(default: %(default)s)")
    e2e.add_argument("--json", required=True, type=Path, help="where to write the results JSON")
    e2e.add_argument("--markdown", type=Path, help="Markdown table to write (default: beside the JSON)")
    e2e.add_argument("--latency-seconds", type=float, default=20.0, help="(default: %(default)s)")
    e2e.set_defaults(handler=_bench_e2e)


def _bench_engine(args: argparse.Namespace) -> int:
    from bench.engine import EngineBenchConfig, run_engine_bench, save
    from model.checkpoint import load_checkpoint
    from model.data import load_event_log

    checkpoint = load_checkpoint(args.checkpoint)
    log = load_event_log(args.data, args.format)
    config = EngineBenchConfig(
        steps=args.steps, batch_size=args.batch_size, naive_events=args.naive_events, max_users=args.max_users
    )
    results = run_engine_bench(checkpoint, log, config)
    save(results, args.json, args.markdown or args.json.with_suffix(".md"))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    return 0


def _bench_e2e(args: argparse.Namespace) -> int:
    from bench.e2e import E2EConfig, run_e2e_bench, write_markdown
    from model.checkpoint import load_checkpoint
    from model.data import load_event_log

    load_checkpoint(args.checkpoint)  # fail early and clearly
    results = run_e2e_bench(load_event_log(args.data), args.checkpoint, E2EConfig(latency_seconds=args.latency_seconds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, args.markdown or args.json.with_suffix(".md"))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=1))
    return 0


def _add_broker(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "broker",
        help="run a single-node Apache Kafka (KRaft) on loopback",
        description=(
            "Start, stop or inspect the embedded Kafka broker. Its jars are fetched from Maven Central once "
            "(needs mvn and Java 17+). 'start' runs in the foreground until Ctrl-C unless --detach."
        ),
    )
    parser.add_argument("action", nargs="?", choices=["start", "stop", "status"], default="start")
    parser.add_argument("--dir", type=Path, default=Path(".shiftwatch/broker"), help="broker state (default: %(default)s)")
    parser.add_argument("--port", type=int, help="client port (default: a free one; 9092 is a common choice)")
    parser.add_argument("--detach", action="store_true", help="start in the background and return")
    parser.set_defaults(handler=_broker)


def _broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from stream.broker import EmbeddedBroker

    broker = EmbeddedBroker(args.dir, port=args.port)
    if args.action == "stop":
        print("stopped" if broker.stop() else f"no broker running in {args.dir}")
        return 0
    if args.action == "status":
        running = broker.pid is not None
        print(f"running at {broker.bootstrap} (pid {broker.pid})" if running else f"no broker running in {args.dir}")
        return 0 if running else 1
    bootstrap = broker.start()
    print(f"Kafka broker at {bootstrap} (pid {broker.pid}); state in {args.dir}", flush=True)
    if args.detach:
        print(f"stop it with: shiftwatch broker stop --dir {args.dir}")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if broker.pid is None:
                print("the broker exited; see its console.log", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    return 0


def _add_topics(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="create ShiftWatch's topics; write their JSON Schemas")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="create every topic that does not exist yet and give every one the configs of the erasure deadline "
        "(SHIFTWATCH_ERASURE_DEADLINE_S; idempotent)",
    )
    create.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    create.add_argument(
        "--app-id", help="also update the table changelogs of this app id's services (default: SHIFTWATCH_APP_ID)"
    )
    create.set_defaults(handler=_topics_create)
    schemas = actions.add_parser("schemas", help="write topics/schemas/*.json from the records, or --check them")
    schemas.add_argument("--check", action="store_true", help="exit 1 if a schema file is out of date")
    schemas.set_defaults(handler=_topics_schemas)


def _bootstrap(args: argparse.Namespace) -> str:
    from stream.settings import Settings

    return getattr(args, "bootstrap", None) or Settings.from_env().kafka_bootstrap


def _topics_create(args: argparse.Namespace) -> int:
    import asyncio

    from stream.kafka import create_topics

    from stream.settings import Settings

    settings = Settings.from_env()
    created = create_topics(_bootstrap(args), settings.erasure_deadline_s, args.app_id or settings.app_id)
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


def _add_worker(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the stream worker (settings from environment variables)",
        description="Consume clickstream.events, publish interest.updates and interest.shifts. Configure with "
        "KAFKA_BOOTSTRAP and SHIFTWATCH_* variables (docs/configuration.md).",
    )
    parser.add_argument("--loglevel", default="warn", choices=LOGLEVELS)
    parser.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    from stream.app import create_app
    from stream.settings import Settings

    return _run(create_app(Settings.from_env()), args.loglevel)


def _run(app: object, loglevel: str) -> int:
    """Run a Faust app in this process until it is stopped."""
    import faust

    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
    return 0


def _add_triggers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "triggers",
        help="run the marketing-trigger service: interest.shifts -> rules -> marketing.triggers",
        description="Apply the rules of a TOML file (see deploy/triggers.toml) to every interest shift and publish "
        "marketing.triggers, at most one per user and rule per cooldown. Kafka and state settings as for the worker.",
    )
    parser.add_argument("--rules", required=True, type=Path, help="TOML rules file; refused at start when invalid")
    parser.add_argument("--loglevel", default="warn", choices=LOGLEVELS)
    parser.set_defaults(handler=_triggers)


def _triggers(args: argparse.Namespace) -> int:
    from stream.rules import load_rules
    from stream.settings import Settings
    from stream.triggers import create_triggers_app

    rules = load_rules(args.rules)  # a bad file stops here, before anything connects
    return _run(create_triggers_app(Settings.from_env(), rules), args.loglevel)


def _add_demand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demand",
        help="run the inventory-demand service: interest.shifts -> windows per category -> inventory.category-demand",
        description="Count, per category and event-time window (tumbling and hopping), the users shifting in and out "
        "and the probability mass gained and lost; publish each window to inventory.category-demand when it closes; "
        "serve /demand/top-movers. Window sizes: SHIFTWATCH_DEMAND_* (docs/configuration.md); Kafka and state "
        "settings as for the worker.",
    )
    parser.add_argument("--loglevel", default="warn", choices=LOGLEVELS)
    parser.set_defaults(handler=_demand)


def _demand(args: argparse.Namespace) -> int:
    from stream.inventory import create_demand_app
    from stream.settings import Settings

    return _run(create_demand_app(Settings.from_env()), args.loglevel)


def _add_forget(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "forget",
        help="erase a user: their row, the worker's caches, and a tombstone on interest.updates",
        description="Send a forget request for USER_ID (the raw id, as in the user's events) to privacy.forget-requests. "
        "The worker that owns the user deletes their table row (a tombstone on its changelog), drops them from its "
        "caches and publishes a tombstone for them on the compacted interest.updates; the triggers service deletes "
        "their rate-limit row. Shifts already published age out with interest.shifts' retention.",
    )
    parser.add_argument("user_id")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    parser.set_defaults(handler=_forget)


def _forget(args: argparse.Namespace) -> int:
    import asyncio

    from stream.kafka import send_forget_request

    partition, offset = asyncio.run(send_forget_request(_bootstrap(args), args.user_id))
    print(f"forget request for user {args.user_id!r} sent (partition {partition}, offset {offset})", file=sys.stderr)
    return 0


def _add_replay(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="produce an event log into clickstream.events in event-time order")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="(default: %(default)s)")
    parser.add_argument("--format", choices=["taobao", "s3rec"])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP or settings)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events per second")
    pace.add_argument("--speedup", type=float, help="replay event time X times faster than it happened")
    pace.add_argument("--max", action="store_true", help="as fast as the broker takes them (the default)")
    parser.add_argument("--users", type=int, help="replay only the first N users")
    parser.set_defaults(handler=_replay)


def _replay(args: argparse.Namespace) -> int:
    import asyncio

    from model.data import load_event_log
    from stream.replay import Pace, replay

    log = load_event_log(args.data, args.format)
    if args.users is not None:
        log = log.first_users(args.users)
    sent = asyncio.run(replay(log, _bootstrap(args), Pace(rate=args.rate, speedup=args.speedup)))
    print(f"produced {sent:,} events from {args.data}", file=sys.stderr)
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole service on the embedded broker and the shipped Taobao sample",
        description="Start Kafka, create topics, train a model and tune its shift detector if none exist, run a worker "
        "and the triggers (deploy/triggers.toml) and demand services, replay the sample, print a live feed of interest "
        "shifts, end with a summary (categories gaining and losing interest, triggers fired, demand windows), stop "
        "everything.",
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("checkpoints/taobao"), help="(default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="(default: %(default)s)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from stream.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(data=args.data, checkpoint=args.checkpoint))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftwatch", description="Streaming interest-shift detection.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_detect_eval(subparsers)
    _add_bench(subparsers)
    _add_broker(subparsers)
    _add_topics(subparsers)
    _add_worker(subparsers)
    _add_triggers(subparsers)
    _add_demand(subparsers)
    _add_forget(subparsers)
    _add_replay(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from model.checkpoint import CheckpointError
    from model.data import DataFormatError
    from stream.broker import BrokerError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (BrokerError, CheckpointError, DataFormatError, FileNotFoundError, ValueError) as error:  # RuleError too
        print(f"shiftwatch {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
