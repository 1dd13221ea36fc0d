"""Prometheus metrics of one node, in a registry of its own (never the process-global one).

Counters the node itself observes (txs committed and rejected, peer send failures, commit
latency) are prometheus-client objects updated where things happen; everything the replica
already counts (height, view, view changes, its own counters) is read from it at scrape time
by a collector, so there is one source of truth for each number.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
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
        yield CounterMetricFamily(
            "cityledger_view_changes", "View changes this replica went through",
            value=s.counters.get("view_changes", 0),
        )  # fmt: skip
        events = CounterMetricFamily(
            "cityledger_replica_events", "Everything the replica counts", labels=["event"]
        )
        for name, value in sorted(s.counters.items()):
            events.add_metric([name], value)
        yield events


class Metrics:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
            ["peer", "why"], registry=self.registry,
        )  # fmt: skip
        self.invalid_peer_messages = Counter(
            "cityledger_invalid_peer_messages", "Peer messages dropped before the replica",
            ["why"], registry=self.registry,
        )  # fmt: skip
        self.commit_latency = Histogram(
            "cityledger_commit_latency_seconds",
            "From admission of a client tx at this node to its commit here",
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_ReplicaCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)
