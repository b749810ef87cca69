"""``shiftwatch worker`` (or another service, like ``shiftwatch triggers``) as a child process
with a start/stop lifecycle: how the demo, the benchmarks and the tests run one.

Settings are passed as :class:`~stream.settings.Settings` field names and become the
worker's environment variables; the web port is a free one unless given.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from stream.ops.broker import free_port
from stream.settings import ENVIRONMENT


class WorkerProcess:
    """``command``: the ``shiftwatch`` subcommand and its arguments (default: the stream worker)."""

    def __init__(self, log: Path, loglevel: str = "warn", command: Sequence[str] = ("worker",), **settings: object):
        settings.setdefault("web_port", free_port())
        self.env = {**os.environ, **{ENVIRONMENT[name]: str(value) for name, value in settings.items()}}
        self.log = log
        self.loglevel = loglevel
        self.command = tuple(command)
        self.process: subprocess.Popen | None = None

    @property
    def web_port(self) -> int:
        return int(self.env[ENVIRONMENT["web_port"]])

    @property
    def running(self) -> subprocess.Popen:
        """The child process; an error before :meth:`start`."""
        if self.process is None:
            raise RuntimeError(f"shiftwatch {self.command[0]} has not been started")
        return self.process

    @property
    def pid(self) -> int:
        return self.running.pid

    @property
    def returncode(self) -> int | None:
        return self.running.returncode

    def start(self) -> WorkerProcess:
        with open(self.log, "ab") as handle:
            command = [sys.executable, "-m", "stream.cli.main", *self.command, "--loglevel", self.loglevel]
            self.process = subprocess.Popen(command, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
        return self

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, kill: bool = False, timeout: float = 30.0) -> None:
        """Terminate (or kill) the worker and wait for it; kill it when it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
