"""``shiftwatch broker``: the embedded single-node Kafka."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "broker",
        help="run a single-node Apache Kafka (KRaft) on loopback",
        description=(
            "Start, stop or inspect the embedded Kafka broker. Its jars are fetched from Maven Central once "
            "(needs mvn and Java 17+). 'start' runs in the foreground until Ctrl-C unless --detach."
        ),
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["start", "stop", "status"],
        default="start",
        help="start it (the default), stop it by pid, or say whether it runs",
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(".shiftwatch/broker"), help="broker state (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, help="client port (default: a free one; 9092 is a common choice)")
    parser.add_argument("--detach", action="store_true", help="start in the background and return")
    parser.set_defaults(handler=_broker)


def _broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from stream.ops.broker import EmbeddedBroker

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
