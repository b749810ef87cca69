"""Shared fixtures: paths to the shipped data, small models, tiny event logs, the Kafka broker."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.net.config import ModelConfig
from model.net.transformer import InterestTransformer, TokenBatch
from stream.ops.admin import wait_until_ready
from stream.ops.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parent.parent
TAOBAO_SAMPLE = ROOT / "data" / "taobao" / "UserBehavior_head_84475rows.csv.gz"
BEAUTY = ROOT / "data" / "amazon-beauty" / "Beauty.txt.gz"


@pytest.fixture
def small_config() -> ModelConfig:
    return ModelConfig(
        n_items=40, n_categories=12, d_model=16, n_layers=2, n_heads=2, d_ff=32, window=4, copy_window=4, dropout=0.0
    )


@pytest.fixture
def small_model(small_config: ModelConfig) -> InterestTransformer:
    torch.manual_seed(0)
    model = InterestTransformer(small_config).eval()
    # Non-trivial recency and gate so both mixture parts matter in the tests.
    with torch.no_grad():
        model.copy_recency.normal_()
        model.copy_gate.bias.fill_(0.3)
    return model


def random_batch(config: ModelConfig, batch: int, length: int, seed: int = 0) -> TokenBatch:
    generator = torch.Generator().manual_seed(seed)

    def ids(high: int) -> torch.Tensor:
        return torch.randint(2, high, (batch, length), generator=generator)

    return TokenBatch(
        items=ids(config.n_items),
        categories=ids(config.n_categories),
        behaviors=ids(config.n_behaviors),
        gaps=ids(config.n_gap_buckets),
        start_positions=torch.zeros(batch, dtype=torch.long),
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker | None]:
    """The embedded broker of the session; ``None`` when ``KAFKA_BOOTSTRAP`` names another."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield None
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: EmbeddedBroker | None) -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or kafka_broker.bootstrap  # type: ignore[union-attr]
    asyncio.run(wait_until_ready(bootstrap))
    return bootstrap
