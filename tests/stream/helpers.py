"""Shared by the stream tests: a small checkpoint over real Taobao users, and offline references."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace

import msgspec
import numpy as np
import torch
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from model.data.loaders import EventLog, UserSequence, load_event_log
from model.data.splits import SplitSpec
from model.data.vocab import Tokenizer
from model.net.batching import pad_sequences
from model.net.checkpoint import Checkpoint
from model.net.config import ModelConfig
from model.net.transformer import InterestTransformer
from model.online.detector import DetectorSettings, ShiftDetector
from model.shift_eval.benchmark import dominant, splice
from stream.ops.admin import partition_counts
from stream.ops.replay import messages
from stream.settings import Settings
from stream.worker.pipeline import Admitted, InterestPipeline, Refused
from stream.worker.state import UserState
from tests.conftest import TAOBAO_SAMPLE

NOW_MS = 1_800_000_000_000
SMALL_MODEL_DETECTOR = DetectorSettings(drift=0.05)
"""The detector for :func:`small_checkpoint`: its untrained model moves only the copy head's
share of the mass (about 0.4), so it gets a lower allowance, as ``detect-eval`` would tune."""


PARTITIONS = 4  # of the suite's topics (SHIFTWATCH_PARTITIONS), the demo's count: few partitions start fast


def taobao_users(n: int) -> EventLog:
    return load_event_log(TAOBAO_SAMPLE).first_users(n)


def small_checkpoint(log: EventLog, vocabulary_users: int = 200, seed: int = 0) -> Checkpoint:
    """A seeded, untrained model whose vocabularies come from the first users only, so the
    later users bring unknown items and categories."""
    vocabulary_log = load_event_log(TAOBAO_SAMPLE).first_users(vocabulary_users)
    tokenizer = Tokenizer.build(vocabulary_log.users, item_min_count=2)
    config = ModelConfig(
        n_items=len(tokenizer.items),
        n_categories=len(tokenizer.categories),
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_ff=32,
        window=6,
        copy_window=8,
        dropout=0.0,
    )
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
        batch = pad_sequences([tokens], [0])
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


def positions(stream: list[tuple[bytes, bytes]]) -> dict[str, tuple[str, int]]:
    """Each replayed event's id -> (user id, position in the user's history)."""
    counts: dict[str, int] = {}
    out = {}
    for key, value in stream:
        user = key.decode()
        out[json.loads(value)["event_id"]] = (user, counts.get(user, 0))
        counts[user] = counts.get(user, 0) + 1
    return out


def partition_of(key: bytes) -> int:
    """The partition of a ShiftWatch topic Kafka's default partitioner gives ``key``."""
    return DefaultPartitioner()(key, list(range(PARTITIONS)), list(range(PARTITIONS)))


def key_per_partition(prefix: str) -> dict[int, bytes]:
    """One key ``<prefix>-<n>`` for each partition of a ShiftWatch topic."""
    by_partition: dict[int, bytes] = {}
    n = 0
    while len(by_partition) < PARTITIONS:
        key = f"{prefix}-{n}".encode()
        by_partition.setdefault(partition_of(key), key)
        n += 1
    return by_partition


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


@dataclass(frozen=True)
class Spliced:
    """A real spliced history as a one-user log: the seam's position and the categories
    that dominate before it (``before``) and after it (``after``)."""

    log: EventLog
    seam: int
    before: str
    after: str


def spliced_history(log: EventLog, part: int = 20) -> Spliced:
    """The first ``part`` events of the most focused user joined to the last ``part`` of the
    most focused user with other interests (focus: the share of their top category)."""

    def focus(categories: tuple[str, ...]) -> float:
        return categories.count(dominant(categories, 1)[0]) / len(categories)

    users = [u for u in log.users if len(u) >= part]
    a = max(users, key=lambda u: (focus(u.categories[:part]), u.user_id))
    head = a.categories[:part]
    others = [u for u in users if u is not a and not set(dominant(u.categories[-part:], 3)) & set(dominant(head, 3))]
    b = max(others, key=lambda u: (focus(u.categories[-part:]), u.user_id))
    user: UserSequence = splice(a, part, b, part)
    return Spliced(replace(log, users=(user,)), part, dominant(head, 1)[0], dominant(b.categories[-part:], 1)[0])


def run_pipeline(
    pipeline: InterestPipeline,
    stream: list[tuple[bytes, bytes]],
    batch_size: int,
    states: dict[bytes, UserState] | None = None,
    first_offset: int = 0,
) -> tuple[list, list, dict, list]:
    """Admit and score ``stream`` in batches: (updates, dead letters, states, shifts), the
    updates and shifts as the JSON objects Kafka would carry."""
    states = {} if states is None else states
    updates, refused, shifts = [], [], []
    pending: list[Admitted] = []
    for offset, (key, value) in enumerate(stream, start=first_offset):
        state = states.setdefault(key, UserState.empty())
        outcome = pipeline.admit(value, key, 0, offset, state, NOW_MS)
        if isinstance(outcome, Refused):
            refused.append(outcome.dead_letter)
        elif isinstance(outcome, Admitted):
            pending.append(outcome)
        if len(pending) == batch_size:
            scored = pipeline.score(pending)
            updates += [None if u is None else msgspec.to_builtins(u) for u in scored.updates]
            shifts += [msgspec.to_builtins(s) for s in scored.shifts]
            pending = []
    scored = pipeline.score(pending)
    updates += [None if u is None else msgspec.to_builtins(u) for u in scored.updates]
    return updates, refused, states, shifts + [msgspec.to_builtins(s) for s in scored.shifts]


def offline_shifts(checkpoint, messages: list[tuple[bytes, bytes]]) -> dict[str, dict]:
    """The shifts a crash-free run raises, by shift id: the pipeline without Kafka."""
    pipeline = InterestPipeline(checkpoint, Settings(), ShiftDetector(SMALL_MODEL_DETECTOR))
    return {s["shift_id"]: s for s in run_pipeline(pipeline, messages, batch_size=64)[3]}


def same_shift(a: dict, b: dict, tolerance: float = 1e-5) -> bool:
    names = lambda changes: [c["category_id"] for c in changes]  # noqa: E731
    return (
        (a["shift_id"], a["user_id"], a["event_id"], a["sequence_length"])
        == (b["shift_id"], b["user_id"], b["event_id"], b["sequence_length"])
        and names(a["from_categories"]) == names(b["from_categories"])
        and names(a["to_categories"]) == names(b["to_categories"])
        and abs(a["divergence"] - b["divergence"]) <= tolerance
    )


def wait_ready(port: int, timeout: float = 120.0) -> None:
    """Return once the worker on ``port`` says it is ready (its ``/readyz``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                if json.loads(response.read())["ready"]:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    raise AssertionError("the worker never became ready")


def wait_committed_to_end(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Wait until ``group`` has committed every partition of ``topic`` up to its end; the offsets."""

    async def offsets() -> tuple[dict[int, int], dict[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            partitions = [TopicPartition(topic, p) for p in range((await partition_counts(admin))[topic])]
            ends = await consumer.end_offsets(partitions)
            return (
                {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic},
                {tp.partition: end for tp, end in ends.items()},
            )
        finally:
            await consumer.stop()
            await admin.close()

    deadline = time.monotonic() + timeout
    while True:
        committed, ends = asyncio.run(offsets())
        if committed == ends or time.monotonic() > deadline:
            assert committed == ends, f"committed {committed}, the partitions end at {ends}"
            return committed
        time.sleep(0.5)
