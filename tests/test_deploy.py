"""The deployment files agree with the code: the Grafana dashboard asks only for metrics the
worker and the downstream services expose, Prometheus scrapes the worker's default port, and
docker-compose.yml validates with a compose CLI (no Docker engine needed) and runs what the
project runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from model.online.engine import IncrementalEngine
from stream.ops.broker import KAFKA_VERSION
from stream.services.demand import HELP as DEMAND_HELP
from stream.services.downstream import StatsCollector
from stream.services.triggers import HELP as TRIGGERS_HELP
from stream.settings import Settings
from stream.worker.metrics import WorkerMetrics
from tests.conftest import ROOT
from tests.stream.helpers import small_checkpoint, taobao_users
from topics.records import CategoryChange, InterestShift

DEPLOY = ROOT / "deploy"


def flow(sources: list[str], targets: list[str]) -> InterestShift:
    """A shift from ``sources`` to ``targets``; the other fields do not matter here."""
    moves = lambda categories: [CategoryChange(c, 0.5, 0.5) for c in categories]  # noqa: E731
    return InterestShift("s", "u", "e", 0, "v", moves(sources), moves(targets), 0.5, 1.0, None, [], 1)


def exposed_names() -> set[str]:
    registry = CollectorRegistry()
    checkpoint = small_checkpoint(taobao_users(3))
    engine = IncrementalEngine(checkpoint.model, checkpoint.model_version)
    metrics = WorkerMetrics(
        registry,
        engine,
        {"model_version": checkpoint.model_version, "detector_calibrated": "no"},
        lambda: {("t", 0): 1},
        lambda: 3,
        ["c1"],
    )
    metrics.events.labels("accepted").inc()
    metrics.dead_letters.labels("not_json").inc()
    metrics.count_shift(flow(["c1"], ["c2"]))
    registry.register(
        StatsCollector(
            "triggers",
            {"shifts": 1, "unreadable": 0, "forgotten": 0, "fired": {"r": 1}},
            TRIGGERS_HELP,
            {"fired": "rule"},
        )
    )
    demand = {
        "shifts": 1,
        "unreadable": 0,
        "moves": 2,
        "duplicate_moves": 0,
        "redelivered_moves": 0,
        "late": {"tumbling": 0},
        "published": {"tumbling": 1},
    }
    registry.register(StatsCollector("demand", demand, DEMAND_HELP, {"late": "window", "published": "window"}))
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_every_dashboard_query_uses_exposed_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "shiftwatch-worker.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    wanted = {name for expr in exprs for name in re.findall(r"\bshiftwatch_[a-z0-9_]+", expr)}
    assert len(dashboard["panels"]) >= 10 and wanted
    assert wanted <= exposed_names(), sorted(wanted - exposed_names())


def test_prometheus_scrapes_the_worker_default_port() -> None:
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in config
    assert f":{Settings().web_port}" in config


def test_shift_flows_keep_label_values_bounded() -> None:
    registry = CollectorRegistry()
    checkpoint = small_checkpoint(taobao_users(3))
    engine = IncrementalEngine(checkpoint.model, checkpoint.model_version)
    metrics = WorkerMetrics(registry, engine, {"model_version": "v"}, dict, lambda: 0, ["a", "b"])
    for source, target in (("a", "b"), ("a", "zzz"), ("y", "zzz")):
        metrics.count_shift(flow([source], [target]))
    metrics.count_shift(flow([], ["b"]))
    flows = {
        (s.labels["from_category"], s.labels["to_category"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "shiftwatch_shift_flows_total"
    }
    assert flows == {("a", "b"): 1, ("a", "other"): 1, ("other", "other"): 1, ("none", "b"): 1}
    assert registry.get_sample_value("shiftwatch_shifts_published_total") == 4


def compose(*args: str) -> str:
    """``docker compose`` (the plugin) or Debian's ``docker-compose``: both validate without an engine."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.fail("no compose CLI: `make install` installs Debian's docker-compose (deploy/setup-system.sh)")
    env = {**os.environ, "SHIFTWATCH_API_TOKEN": "a-test-token"}
    done = subprocess.run(
        [*command, "--profile", "replay", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_compose_file_validates_and_runs_the_whole_service() -> None:
    services = set(compose("config", "--services").split())
    assert services == {
        "kafka",
        "topic-init",
        "worker-1",
        "worker-2",
        "triggers",
        "demand",
        "replay",
        "prometheus",
        "grafana",
    }
    config = compose("config")
    assert f"image: apache/kafka:{KAFKA_VERSION}" in config, "the same Kafka as the embedded broker"
    assert "service_completed_successfully" in config and "profiles:" in config
    mounts = re.findall(
        rf"(?:source: |^\s+- )({re.escape(str(ROOT))}[^:\s]*)", config, flags=re.M
    )  # long or short syntax
    assert len(mounts) >= 4
    for source in mounts:  # every bind mount is a file of the repository (checkpoints: trained first)
        assert Path(source).exists() or Path(source) == ROOT / "checkpoints", source
    scraped = set(re.findall(r"([a-z0-9-]+):6066", (DEPLOY / "compose" / "prometheus.yml").read_text()))
    assert scraped == {"worker-1", "worker-2", "triggers", "demand"}
    published = re.findall(r'^\s+- "([^"]*:\d+:\d+)"$', (ROOT / "docker-compose.yml").read_text(), flags=re.M)
    assert published and all(port.startswith("127.0.0.1:") for port in published), "nothing published beyond loopback"
    assert config.count("SHIFTWATCH_API_TOKEN: a-test-token") >= 4, "every web server behind the token"


def test_the_image_pins_the_project_torch_and_copies_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    torch_pin = pinned.group(1)
    assert torch_pin in dockerfile
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
