"""The embedded broker: started, found again by pid, stopped; the CLI drives the same code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.ops.broker import EmbeddedBroker, cluster_id, port_open, server_properties

pytestmark = pytest.mark.kafka


def test_server_properties_are_a_single_node_kraft_on_loopback(tmp_path) -> None:
    text = server_properties(tmp_path, 19092, 19093)
    assert "process.roles=broker,controller" in text
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in text
    assert f"log.dirs={tmp_path / 'logs'}" in text


def test_cli_starts_detached_reports_and_stops_by_pid(tmp_path) -> None:
    state = tmp_path / "broker"

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "stream.cli.main", "broker", *args, "--dir", str(state)]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)

    started = cli("start", "--detach")
    assert started.returncode == 0, started.stderr
    broker = EmbeddedBroker(state)
    pid, bootstrap = broker.pid, broker.bootstrap
    host, port = bootstrap.split(":")
    assert pid is not None and port_open(host, int(port))
    assert cli("status").returncode == 0
    assert cli("start", "--detach").returncode == 0 and broker.pid == pid  # idempotent
    stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert broker.pid is None and cli("status").returncode == 1


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = [cluster_id() for _ in range(2000)]  # about 1 in 64 raw candidates starts with "-"
    assert not any(i.startswith("-") for i in ids) and all(len(i) == 22 for i in ids)
