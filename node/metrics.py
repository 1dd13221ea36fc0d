"""Prometheus metrics of one node, in a registry of its own (never the process-global one).

Counters the node itself observes (txs committed and rejected, peer send failures, commit
latency, the operational events of node/health.py) are prometheus-client objects updated where
things happen; what the replica already holds (height, view, its own counters) is read from it
at scrape time by a collector. Each event is counted by one series only: the replica counters
that the node counts itself (blocks and txs committed, view changes started and finished) are
left out of `cityledger_replica_events`. Peers are labelled by validator id. The registry also
carries prometheus-client's standard process and platform collectors and a build-info gauge.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Final

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Replica counters a metric of the node's own counts already: not repeated in replica_events.
COUNTED_BY_NODE: Final = frozenset({"blocks_committed", "txs_committed", "view_changes",
                                    "new_views"})  # fmt: skip
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Snapshot:
    """What the replica and the node report at one scrape."""

    height: int
    view: int
    mempool: int
    in_view_change: bool
    counters: Mapping[str, int]


class _ReplicaCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        yield GaugeMetricFamily("cityledger_height", "Committed chain height", value=s.height)
        yield GaugeMetricFamily("cityledger_view", "Current consensus view", value=s.view)
        yield GaugeMetricFamily(
            "cityledger_mempool_txs", "Pending client txs in the pool", value=s.mempool
        )
        yield GaugeMetricFamily(
            "cityledger_in_view_change", "1 while a view change is under way",
            value=int(s.in_view_change),
        )  # fmt: skip
        events = CounterMetricFamily(
            "cityledger_replica_events", "Everything the replica counts", labels=["event"]
        )
        for name, value in sorted(s.counters.items()):
            if name not in COUNTED_BY_NODE:
                events.add_metric([name], value)
        yield events


class Metrics:
    def __init__(self, snapshot: Callable[[], Snapshot], version: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(PROCESS_COLLECTOR)
        self.registry.register(PLATFORM_COLLECTOR)
        Gauge(
            "cityledger_build_info", "The node software's version (always 1)", ["version"],
            registry=self.registry,
        ).labels(version or package_version()).set(1)  # fmt: skip
        self.last_commit = Gauge(
            "cityledger_last_commit_timestamp_seconds",
            "Wall-clock time this node last committed a block (Unix seconds; 0: none yet)",
            registry=self.registry,
        )  # fmt: skip
        self._events(self.registry)
        self.txs_committed = Counter(
            "cityledger_txs_committed", "Transactions committed to the store",
            registry=self.registry,
        )  # fmt: skip
        self.blocks_committed = Counter(
            "cityledger_blocks_committed", "Blocks committed to the store", registry=self.registry
        )
        self.txs_rejected = Counter(
            "cityledger_txs_rejected", "Client transactions refused, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.peer_send_failures = Counter(
            "cityledger_peer_send_failures", "Peer messages dropped or not delivered",
            ["peer", "why"], registry=self.registry,  # peer: its validator id
        )  # fmt: skip
        self.invalid_peer_messages = Counter(
            "cityledger_invalid_peer_messages", "Peer messages dropped before the replica",
            ["why"], registry=self.registry,
        )  # fmt: skip
        self.tx_refusals = Counter(
            "cityledger_tx_refusals", "Committed txs a record rule refused, by reason code",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.risk_alerts = Counter(
            "cityledger_risk_alerts", "Risk alerts raised by committed blocks, by kind",
            ["kind"], registry=self.registry,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "cityledger_commit_latency_seconds",
            "From admission of a client tx at this node to its commit here",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ReplicaCollector(snapshot))

    def _events(self, registry: CollectorRegistry) -> None:
        """The gauges and counters of node/health.py: one counter per event it logs."""
        self.peer_up = Gauge(
            "cityledger_peer_up", "1 while the peer has been heard from lately", ["peer"],
            registry=registry,
        )  # fmt: skip
        self.peer_downs = Counter(
            "cityledger_peer_downs", "Times a peer went silent", ["peer"], registry=registry
        )
        self.quorum_reachable = Gauge(
            "cityledger_quorum_reachable", "1 while this node and the peers up make a quorum",
            registry=registry,
        )  # fmt: skip
        self.quorum_losses = Counter(
            "cityledger_quorum_losses", "Times the reachable validators fell below a quorum",
            registry=registry,
        )  # fmt: skip
        self.view_changes = Counter(
            "cityledger_view_changes", "View changes started (one per view entered into)",
            registry=registry,
        )  # fmt: skip
        self.new_views = Counter(
            "cityledger_new_views", "View changes finished (a new view installed)",
            registry=registry,
        )  # fmt: skip
        self.catch_ups = Counter(
            "cityledger_catch_ups", "Catch-ups (state transfers) started", registry=registry
        )
        self.blocks_refused = Counter(
            "cityledger_blocks_refused", "Proposed or fetched blocks refused, by reason",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.ready = Gauge("cityledger_ready", "1 while /readyz answers 200", registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def package_version() -> str:
    try:
        return metadata.version("cityledger")
    except metadata.PackageNotFoundError:
        return "unknown"
