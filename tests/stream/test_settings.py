from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import ENVIRONMENT, Settings, markdown_table
from tests.conftest import ROOT

DOC = ROOT / "docs" / "configuration.md"


def test_every_setting_reads_its_environment_variable() -> None:
    environ = {
        "KAFKA_BOOTSTRAP": "a:1,b:2",
        "SHIFTWATCH_BATCH_SIZE": "7",
        "SHIFTWATCH_LATENESS_S": "1.5",
        "SHIFTWATCH_CHECKPOINT": "/x/y",
        "SHIFTWATCH_STORE": "memory://",
    }
    settings = Settings.from_env(environ)
    assert settings.kafka_url == "kafka://a:1;kafka://b:2"
    assert (settings.batch_size, settings.lateness_s, settings.checkpoint, settings.store) == (
        7,
        1.5,
        Path("/x/y"),
        "memory://",
    )
    assert Settings.from_env({}) == Settings()
    assert len(set(ENVIRONMENT.values())) == len(ENVIRONMENT)


def test_a_malformed_value_names_its_variable() -> None:
    with pytest.raises(ValueError, match="SHIFTWATCH_TOP_K"):
        Settings.from_env({"SHIFTWATCH_TOP_K": "five"})


def test_the_configuration_document_lists_every_setting_as_the_code_has_it() -> None:
    assert markdown_table() in DOC.read_text(), "regenerate the table in docs/configuration.md"
