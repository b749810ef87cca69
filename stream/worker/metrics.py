"""The worker's Prometheus metrics, registered beside Faust's own (its Prometheus sensor).

Counters and histograms are updated by the agent per batch; gauges that describe the
engine's cache and the consumer's lag are read when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from model.online.engine import IncrementalEngine
from topics.records import CategoryChange, InterestShift

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class WorkerMetrics:
    """Every ``shiftwatch_*`` metric of one worker, in ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        engine: IncrementalEngine,
        model_info: Mapping[str, str],
        lags: Callable[[], Mapping[tuple[str, int], int]],
        table_rows: Callable[[], int],
        flow_categories: Collection[str],
    ):
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.events = counter(
            "shiftwatch_events_total",
            "Input messages by outcome: accepted, duplicate (event id seen), redelivered (offset seen), invalid, late",
            ("outcome",),
        )
        self.input_messages = counter(
            "shiftwatch_input_messages_total",
            "Input messages taken, by topic, counted per batch (read in bulk, the input passes no per-message "
            "Faust sensor)",
            ("topic",),
        )
        self.dead_letters = counter("shiftwatch_dead_letters_total", "Refused input messages by reason", ("reason",))
        self.updates = counter("shiftwatch_updates_published_total", "Interest updates published")
        self.shifts = counter("shiftwatch_shifts_published_total", "Interest shifts published")
        self.expired = counter("shiftwatch_users_expired_total", "Inactive users evicted by the state TTL sweeper")
        self.forgotten = counter(
            "shiftwatch_users_forgotten_total", "Forget requests carried out (row, caches, update tombstone)"
        )
        self.flows = counter(
            "shiftwatch_shift_flows_total",
            "Shifts by their main from and to category; categories outside the checkpoint's most frequent "
            "are 'other' (bounded label values)",
            ("from_category", "to_category"),
        )
        self.scoring_seconds = counter(
            "shiftwatch_scoring_seconds_total",
            "Time scoring batches, by stage: engine (tokens, engine step, readout), recent (the detector's "
            "input), detector, records",
            ("stage",),
        )
        self.flow_categories = frozenset(flow_categories)
        self.event_to_publish = Histogram(
            "shiftwatch_event_to_publish_seconds",
            "From an event's own timestamp to its update acknowledged by Kafka",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.ingest_to_publish = Histogram(
            "shiftwatch_ingest_to_publish_seconds",
            "From an event's arrival in Kafka to its update acknowledged by Kafka",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.model_step = Histogram(
            "shiftwatch_model_step_seconds",
            "Engine step and shift detectors per micro-batch",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.batch_size = Histogram(
            "shiftwatch_batch_events",
            "Admitted events per micro-batch",
            registry=registry,
            buckets=(1, 4, 16, 64, 128, 256, 512, 1024, 2048),
        )
        self.model = Info("shiftwatch_model", "The checkpoint served and its shift detector", registry=registry)
        self.model.info(dict(model_info))
        Gauge(
            "shiftwatch_table_rows",
            "User rows in this worker's table store (counted at most every 30 s)",
            registry=registry,
        ).set_function(table_rows)
        registry.register(_EngineCollector(engine))
        registry.register(_LagCollector(lags))

    def count_shift(self, shift: InterestShift) -> None:
        """Count a published shift: in total and by its main from -> to categories."""
        self.shifts.inc()
        self.flows.labels(self._bucket(shift.from_categories), self._bucket(shift.to_categories)).inc()

    def _bucket(self, changes: Sequence[CategoryChange]) -> str:
        if not changes:
            return "none"
        category = changes[0].category_id
        return category if category in self.flow_categories else "other"


class _EngineCollector(Collector):
    def __init__(self, engine: IncrementalEngine):
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.engine.stats
        for name, doc, value in (
            ("shiftwatch_cache_hits", "Events whose user was cached (one incremental step)", stats.hits),
            ("shiftwatch_cache_misses", "Events whose user was rebuilt from their table row", stats.rebuilds),
            ("shiftwatch_cache_first_events", "Events that started a user's history", stats.first_events),
            ("shiftwatch_cache_evictions", "Users evicted from the cache (least recently used)", stats.evictions),
            ("shiftwatch_model_swaps", "New model versions swapped in without a restart", stats.swaps),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "shiftwatch_cache_bytes", "Bytes of cache slabs allocated", value=self.engine.cache_bytes
        )
        yield GaugeMetricFamily("shiftwatch_active_users", "Users in the engine cache", value=len(self.engine))


class _LagCollector(Collector):
    """``lags()``: messages behind the partition's end, by (topic, partition), read at each scrape."""

    def __init__(self, lags: Callable[[], Mapping[tuple[str, int], int]]):
        self.lags = lags

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "shiftwatch_consumer_lag", "Input messages not yet processed, by partition", labels=["topic", "partition"]
        )
        for (topic, partition), lag in sorted(self.lags().items()):
            family.add_metric([topic, str(partition)], lag)
        yield family
