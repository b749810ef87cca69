"""The worker's one settings object, read from environment variables.

Every field has a documented default and an environment variable; the table in
``docs/configuration.md`` is :func:`markdown_table` (a test keeps them equal).

>>> Settings.from_env({"SHIFTWATCH_BATCH_SIZE": "128", "KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}).batch_size
128
>>> Settings.from_env({"SHIFTWATCH_BATCH_SIZE": "lots"})
Traceback (most recent call last):
...
ValueError: SHIFTWATCH_BATCH_SIZE='lots': invalid literal for int() with base 10: 'lots'
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from topics.records import DEAD_LETTER_COPY_BYTES

T = TypeVar("T")
CACHE_DTYPES = ("float16", "float32", "bfloat16")


def setting(default: T, doc: str) -> T:
    """A settings field: its default and the line ``docs/configuration.md`` gives it."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = setting("127.0.0.1:9092", "Kafka bootstrap servers, comma separated.")
    app_id: str = setting("shiftwatch", "Faust app id: the consumer group and the prefix of table changelog topics.")
    partitions: int = setting(
        12,
        "Partitions of every ShiftWatch topic and table changelog (co-partitioned by user id): at most this many "
        "processes share a service's load. Topics are created with it and an existing topic keeps its count; "
        "growing it takes new topics (docs/operations.md). The embedded demo uses 4.",
    )
    checkpoint: Path = setting(
        Path("checkpoints/taobao"),
        "Model checkpoint directory to serve, with its tuned shift detector (`detector.json`, written by "
        "`shiftwatch detect-eval`) when it has one.",
    )
    checkpoint_poll_s: float = setting(
        10.0,
        "How often (seconds) the worker looks for a new model version in the checkpoint directory and swaps it in "
        "without a restart (stream/worker/hotswap.py); 0 never.",
    )
    data_dir: Path = setting(Path(".shiftwatch/worker"), "Worker state on disk (the RocksDB table store).")
    store: str = setting("rocksdb://", "Faust table store: `rocksdb://` (via rocksdict) or `memory://`.")
    store_memory_mb: int = setting(
        16,
        "RocksDB memory of each partition of each table, MiB: two write buffers of a quarter and a block cache of "
        "half (Faust's defaults allow 2.2 GiB a partition).",
    )
    processing_guarantee: str = setting(
        "at_least_once",
        "`at_least_once`, or `exactly_once`: the worker publishes and writes each input partition's results in a "
        "Kafka transaction committed with its offsets, so consumers reading committed messages see every output "
        "once, even across a crash.",
    )
    commit_interval_s: float = setting(
        2.8,
        "How often (seconds) Faust commits the input offsets; under `exactly_once` also how often the open "
        "transactions are committed, so how long consumers reading committed messages wait for the outputs.",
    )
    session_timeout_s: float = setting(
        30.0,
        "How long Kafka waits for a silent process (killed, frozen) before giving its partitions to the others.",
    )
    batch_size: int = setting(
        512, "Most messages per batch: the worker's (what has been fetched, up to this) and the services'."
    )
    batches_in_flight: int = setting(
        4,
        "Batches the worker has begun and not yet made durable: the next batch is admitted and scored while "
        "earlier ones wait on Kafka (stream/runtime/inflight.py). Under `exactly_once` always 1.",
    )
    batches_waiting_to_score: int = setting(
        0,
        "Batches admitted and waiting for the scoring thread before the worker takes the next one: 0 takes it "
        "once the batch before is scored and has published (while that one waits for Kafka and is written), so "
        "that what arrives meanwhile makes one larger batch; 1 admits it while the batch before is scored.",
    )
    batch_within_s: float = setting(
        0.05, "Longest wait to fill a batch of a downstream service, seconds (the worker takes what has been fetched)."
    )
    state_ttl_s: float = setting(
        0.0,
        "Evict a user's row (tombstone in the changelog, caches dropped) once the latest event time in their "
        "partition is this many seconds past their last event; 0 keeps every user.",
    )
    state_sweep_s: float = setting(60.0, "How often (seconds) the TTL sweeper looks for inactive users.")
    top_k: int = setting(5, "Categories per interest update.")
    publish_threshold: float = setting(
        0.0,
        "Publish an update only when the distribution moved more than this (total variation); 0 publishes every event.",
    )
    lateness_s: float = setting(
        3600.0,
        "How far (seconds) an event may be older than the user's latest and still be put in time order; older ones are dead-lettered as `late`.",
    )
    max_string_length: int = setting(256, "Longest id accepted in an input event.")
    max_event_bytes: int = setting(
        16_384, "Largest input message accepted, bytes; larger ones are dead-lettered as `oversized`."
    )
    cache_mb: int = setting(256, "Byte budget of the engine's KV cache, MiB.")
    cache_dtype: str = setting(
        "float16",
        "Precision of the cached attention keys and values: `float16` (39,600 bytes per user at the shipped "
        "model's size; outputs within 1e-5 of float32, bench/results/scoring.md), `float32` (65,200) or "
        "`bfloat16` (coarser).",
    )
    torch_threads: int = setting(
        0,
        "Threads PyTorch computes a batch with; 0: one per CPU this process may run on, less one for the event "
        "loop (at least one).",
    )
    state_cache_users: int = setting(
        20_000, "Users whose table rows are kept deserialised in memory (least recently used first out)."
    )
    pseudonym_key: str = setting(
        "",
        "Secret for pseudonymous user ids: when set, user and event ids are replaced by an HMAC-SHA-256 under it "
        "before anything is stored or published (stream/worker/privacy.py). Empty: ids are kept as they come.",
    )
    demand_tumbling_s: float = setting(
        86400.0, "`shiftwatch demand`: size of the tumbling windows, seconds of event time."
    )
    demand_hopping_s: float = setting(
        604800.0, "`shiftwatch demand`: size of the hopping windows, seconds of event time."
    )
    demand_hop_s: float = setting(
        86400.0, "`shiftwatch demand`: step between hopping windows, seconds (a divisor of their size)."
    )
    demand_grace_s: float = setting(
        3600.0,
        "`shiftwatch demand`: a window closes (and is published) when its partition's event time passes its end "
        "by this much; later shifts for it are counted as late.",
    )
    web_host: str = setting(
        "127.0.0.1",
        "Host name other workers and clients reach this process's web server by (Faust's canonical URL, used to "
        "forward table queries to the owning worker).",
    )
    web_bind: str = setting(
        "127.0.0.1",
        "Interface the web server listens on: loopback by default; `0.0.0.0` (every interface) only with "
        "`SHIFTWATCH_API_TOKEN` set, or the worker refuses to start.",
    )
    api_token: str = setting(
        "",
        "Bearer token every user-level endpoint requires (`Authorization: Bearer <token>`; 401 without it): "
        "/users/..., /shifts/recent, /shifts/stream. /metrics, /healthz, /readyz, /stats, /categories and /dashboard stay open. "
        "Empty: no token, allowed only while the server listens on loopback.",
    )
    sse_subscribers: int = setting(16, "Most clients following /shifts/stream at once; more are answered 503.")
    category_names: str = setting(
        "",
        "CSV file of category names for the dashboard (`id,name` per line; a first line `id,name` is a header). "
        "Empty: categories are shown by id.",
    )
    erasure_deadline_s: float = setting(
        86400.0,
        "Longest time (seconds) a forgotten user's data stays readable on any topic or changelog: `shiftwatch "
        "topics create` sets every topic's compaction lag, segment roll and retention from it (topics/specs.py).",
    )
    web_port: int = setting(
        6066,
        "Port of the worker's web server: /metrics (Prometheus), /healthz, /readyz, /users/{id}/interests, "
        "/shifts/recent.",
    )

    @property
    def compute_threads(self) -> int:
        """:attr:`torch_threads`, with 0 resolved for this process."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, len(os.sched_getaffinity(0)) - 1)

    def __post_init__(self) -> None:
        if not 0 < self.max_event_bytes <= DEAD_LETTER_COPY_BYTES:
            raise ValueError(
                f"SHIFTWATCH_MAX_EVENT_BYTES={self.max_event_bytes}: must be from 1 to {DEAD_LETTER_COPY_BYTES}, "
                "so that a dead letter copies every message of an accepted size whole"
            )
        if not self.api_token and not is_loopback(self.web_bind):
            raise ValueError(
                f"SHIFTWATCH_WEB_BIND={self.web_bind!r} listens beyond loopback: set SHIFTWATCH_API_TOKEN too, so that "
                "user data is not served to anyone who reaches the port"
            )
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"SHIFTWATCH_CACHE_DTYPE={self.cache_dtype!r}: must be one of {', '.join(CACHE_DTYPES)}")
        if self.partitions < 1:
            raise ValueError(f"SHIFTWATCH_PARTITIONS={self.partitions}: must be 1 or more")
        if self.store_memory_mb < 1:
            raise ValueError(f"SHIFTWATCH_STORE_MEMORY_MB={self.store_memory_mb}: must be 1 or more")
        if self.batches_in_flight < 1:
            raise ValueError(f"SHIFTWATCH_BATCHES_IN_FLIGHT={self.batches_in_flight}: must be 1 or more")
        if self.batches_waiting_to_score < 0:
            raise ValueError(f"SHIFTWATCH_BATCHES_WAITING_TO_SCORE={self.batches_waiting_to_score}: must be 0 or more")
        if self.torch_threads < 0:
            raise ValueError(f"SHIFTWATCH_TORCH_THREADS={self.torch_threads}: must be 0 (automatic) or more")
        if self.erasure_deadline_s < 4:  # a quarter of it is a segment's lifetime: at least a second
            raise ValueError(f"SHIFTWATCH_ERASURE_DEADLINE_S={self.erasure_deadline_s:g}: must be at least 4 seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``KAFKA_BOOTSTRAP`` and ``SHIFTWATCH_<FIELD>`` variables."""
        environ = os.environ if environ is None else environ
        overrides: dict[str, Any] = {}
        for f in fields(cls):
            name = ENVIRONMENT[f.name]
            if name in environ:
                raw = environ[name]
                kind: Callable[[str], Any] = type(f.default)
                try:
                    overrides[f.name] = kind(raw)
                except ValueError as error:
                    raise ValueError(f"{name}={raw!r}: {error}") from None
        return replace(cls(), **overrides)

    @property
    def kafka_url(self) -> str:
        """Bootstrap servers in Faust's ``kafka://`` form."""
        return ";".join(f"kafka://{server.strip()}" for server in self.kafka_bootstrap.split(","))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def markdown_table() -> str:
    """The settings as a Markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        rows.append(f"| `{ENVIRONMENT[f.name]}` | `{f.default}` | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


ENVIRONMENT: dict[str, str] = {
    f.name: "KAFKA_BOOTSTRAP" if f.name == "kafka_bootstrap" else f"SHIFTWATCH_{f.name.upper()}"
    for f in fields(Settings)
}
