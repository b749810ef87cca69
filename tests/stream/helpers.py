"""Shared by the stream tests: a small checkpoint over real Taobao users, and offline references."""

from __future__ import annotations

import json

import numpy as np
import torch

from model.checkpoint import Checkpoint
from model.config import ModelConfig
from model.data import EventLog, load_event_log
from model.splits import SplitSpec
from model.transformer import InterestTransformer, TokenBatch
from model.vocab import TokenSequence, Tokenizer
from stream.replay import messages
from tests.conftest import TAOBAO_SAMPLE


def taobao_users(n: int) -> EventLog:
    return load_event_log(TAOBAO_SAMPLE).first_users(n)


def small_checkpoint(log: EventLog, vocabulary_users: int = 200, seed: int = 0) -> Checkpoint:
    """A seeded, untrained model whose vocabularies come from the first users only, so the
    later users bring unknown items and categories."""
    vocabulary_log = load_event_log(TAOBAO_SAMPLE).first_users(vocabulary_users)
    tokenizer = Tokenizer.build(vocabulary_log.users, item_min_count=2)
    config = ModelConfig(
        n_items=len(tokenizer.items), n_categories=len(tokenizer.categories),
        d_model=16, n_layers=2, n_heads=2, d_ff=32, window=6, copy_window=8, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = InterestTransformer(config).eval()
    with torch.no_grad():
        model.copy_recency.normal_()
        model.copy_gate.bias.fill_(0.3)
        model.category_head.bias.normal_()
    return Checkpoint(model, tokenizer, SplitSpec("leave_one_out"), log.name, log.format)


@torch.no_grad()
def offline_probabilities(checkpoint: Checkpoint, log: EventLog) -> dict[str, np.ndarray]:
    """Per user, the interest distribution (by category id) after each event: one full forward."""
    out = {}
    for user in log.users:
        tokens = checkpoint.tokenizer.encode(user)
        batch = TokenBatch(
            *(torch.from_numpy(getattr(tokens, name))[None] for name in TokenSequence.__slots__),
            start_positions=torch.zeros(1, dtype=torch.long),
        )
        out[user.user_id] = checkpoint.model.category_probs(checkpoint.model.encode(batch))[0].numpy()
    return out


def assert_update_matches(update: dict, checkpoint: Checkpoint, reference: np.ndarray, tolerance: float = 2e-6) -> None:
    """Every in-vocabulary category of an update carries the offline probability."""
    position = update["sequence_length"] - 1
    vocabulary = checkpoint.tokenizer.categories
    checked = 0
    for entry in update["top_categories"]:
        if entry["category_id"] in vocabulary:
            expected = float(reference[position, vocabulary.encode(entry["category_id"])])
            assert abs(entry["probability"] - expected) <= tolerance, (update, expected)
            checked += 1
    assert checked > 0


def raw_messages(log: EventLog) -> list[tuple[bytes, bytes]]:
    """(key, value) of every event, in the order the replay produces them."""
    return [(key, value) for _, key, value in messages(log)]


def event_value(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def same_update(a: dict, b: dict, tolerance: float = 2e-6) -> bool:
    """Equal up to float rounding (a rebuilt cache and an incremental one differ by ~1e-7 per
    probability; the entropy sums thousands of terms, so it gets a wider margin)."""
    fixed = ("user_id", "event_id", "ts", "model_version", "sequence_length")
    if any(a[k] != b[k] for k in fixed) or abs(a["entropy"] - b["entropy"]) > 10 * tolerance:
        return False
    top_a = {c["category_id"]: c["probability"] for c in a["top_categories"]}
    top_b = {c["category_id"]: c["probability"] for c in b["top_categories"]}
    shared = top_a.keys() & top_b.keys()
    return len(shared) >= len(top_a) - 1 and all(abs(top_a[c] - top_b[c]) <= tolerance for c in shared)
