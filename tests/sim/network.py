"""The simulated network: which sends arrive, when, how often, and who can reach whom.

It owns the fate of every message (lost, delayed, duplicated, reordered by uneven delays) and
the partition, all drawn from the simulator's one seeded `random.Random`. It never sees message
contents: the transport contract is bytes in, maybe bytes out (STYLE.md item 8).
"""

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

DUPLICATES_MAX = 3  # copies of one send beyond the first


@dataclass(frozen=True)
class NetParams:
    """Per-send odds and delays. A `spike` sends one message far later: that is reordering."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay_min_ms: int = 1
    delay_max_ms: int = 10
    spike: float = 0.0
    spike_max_ms: int = 300

    def __post_init__(self) -> None:
        assert 0.0 <= self.loss <= 1.0
        assert 0.0 <= self.duplicate <= 1.0
        assert 0.0 <= self.spike <= 1.0
        assert 0 <= self.delay_min_ms <= self.delay_max_ms <= self.spike_max_ms

    def describe(self) -> str:
        return (
            f"loss={self.loss:.2f} dup={self.duplicate:.2f} "
            f"delay={self.delay_min_ms}..{self.delay_max_ms}ms "
            f"spike={self.spike:.2f}/{self.spike_max_ms}ms"
        )


CALM = NetParams()


class SimNetwork:
    def __init__(self, rng: random.Random, nodes: int, params: NetParams = CALM) -> None:
        self._rng = rng
        self.nodes = nodes
        self.params = params
        self._group: list[int] = [0] * nodes  # nodes reach each other iff in the same group
        # What the network did to sends, by kind (cut_off, lost, duplicated, spiked): tests
        # check that their fault fired. Counting draws nothing from the rng.
        self.counts: Counter[str] = Counter()

    def configure(self, **changes: Any) -> None:
        self.params = replace(self.params, **changes)

    # --- partitions --------------------------------------------------------------------------

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Split the nodes into `groups`; a node named in no group is cut off from everyone."""
        self._group = [-1 - i for i in range(self.nodes)]  # each alone unless grouped
        seen: set[int] = set()
        for number, group in enumerate(groups):
            for node in group:
                assert 0 <= node < self.nodes, f"no node {node}"
                assert node not in seen, "groups must be disjoint"
                seen.add(node)
                self._group[node] = number

    def add_node(self) -> None:
        """One more node, in the largest group (the whole network when it is not split)."""
        groups = self.groups()
        largest = max(groups, key=len)
        self._group.append(self._group[largest[0]])
        self.nodes += 1

    def heal(self) -> None:
        self._group = [0] * self.nodes

    def connected(self, a: int, b: int) -> bool:
        return self._group[a] == self._group[b]

    @property
    def partitioned(self) -> bool:
        return len(set(self._group)) > 1

    def groups(self) -> list[list[int]]:
        by_group: dict[int, list[int]] = {}
        for node, group in enumerate(self._group):
            by_group.setdefault(group, []).append(node)
        return list(by_group.values())

    # --- fate of one send --------------------------------------------------------------------

    def delays(self, sender: int, receiver: int) -> list[int]:
        """The delays (ms) after which copies of one send arrive; [] when it is lost."""
        if not self.connected(sender, receiver):
            self.counts["cut_off"] += 1
            return []
        p, rng = self.params, self._rng
        if p.loss and rng.random() < p.loss:
            self.counts["lost"] += 1
            return []
        copies = 1
        while copies <= DUPLICATES_MAX and p.duplicate and rng.random() < p.duplicate:
            copies += 1
        self.counts["duplicated"] += copies - 1
        return [self._one_delay() for _ in range(copies)]

    def _one_delay(self) -> int:
        p, rng = self.params, self._rng
        if p.spike and rng.random() < p.spike:
            self.counts["spiked"] += 1
            return rng.randint(p.delay_max_ms, p.spike_max_ms)
        return rng.randint(p.delay_min_ms, p.delay_max_ms)

    def round_trip_ms(self) -> int:
        return self._one_delay() + self._one_delay()
