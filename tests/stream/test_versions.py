from __future__ import annotations

import re

from stream.ops.broker import KAFKA_VERSION, POM
from tests.conftest import ROOT


def test_one_kafka_version_everywhere() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert re.findall(r"apache/kafka:([\d.]+)", compose) == [KAFKA_VERSION]
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in POM.read_text()
