"""The package map's rules: data flows one way, and what the worker loads is what it runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SERVING = ("model.data", "model.net", "model.online")  # the model packages a running worker may load
OFFLINE = ("model.training", "model.shift_eval", "bench", "river")


def loaded_by(module: str) -> set[str]:
    """Every module importing ``module`` loads, in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(result.stdout))


def under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("entry", ["stream.worker.worker", "stream.cli.main"])
def test_the_worker_loads_no_training_or_evaluation_code(entry: str) -> None:
    modules = loaded_by(entry)
    assert not {m for m in modules if under(m, OFFLINE)}
    assert {m for m in modules if m.startswith("model.")} <= {m for m in modules if under(m, SERVING)}


def imports_of(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources(*packages: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for package in packages for p in (ROOT / package).rglob("*.py"))


def test_nothing_shipped_imports_bench_and_the_model_never_imports_the_stream() -> None:
    for path in sources("model", "stream", "topics"):
        assert not {m for m in imports_of(path) if under(m, ("bench",))}, path
    for path in sources("model"):
        assert not {m for m in imports_of(path) if under(m, ("stream",))}, path
    for path in sources("topics"):
        assert not {m for m in imports_of(path) if under(m, ("stream", "model.net", "model.online"))}, path


def test_serving_code_imports_no_offline_package() -> None:
    for path in sources("model/data", "model/net", "model/online", "stream/worker", "stream/runtime"):
        assert not {m for m in imports_of(path) if under(m, OFFLINE)}, path
