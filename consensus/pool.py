"""The replica's pool of pending client transactions: bounded, ordered by arrival.

Every replica pools every admitted tx (clients' own and those relayed by peers), so a view
change loses none: whichever replica becomes primary proposes what is still pending. Txs leave
the pool when they commit or when their timestamp falls out of the time-to-live.
"""

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from typing import Final

from ledger.tx import Transaction

RELAY_AGAIN_MAX: Final = 1000  # pending txs re-sent to the primary at once
ORDER_SLACK: Final = 128  # removed txs the arrival queue may hold beyond twice the pool


@dataclass
class TxPool:
    capacity: int
    _txs: dict[bytes, Transaction] = field(default_factory=dict)  # insertion order = arrival
    _arrival_ms: dict[bytes, int] = field(default_factory=dict)
    # (tx id, arrival) in arrival order, left behind by removals until they reach the front
    # or the queue is compacted (a dict's first entry is slow to find after many removals).
    _order: deque[tuple[bytes, int]] = field(default_factory=deque)

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txs

    def count_of(self, tx_ids: Set[bytes]) -> int:
        """How many of `tx_ids` are pending (a set operation, not a loop in Python)."""
        return len(self._txs.keys() & tx_ids)

    def get(self, tx_id: bytes) -> Transaction | None:
        return self._txs.get(tx_id)

    @property
    def free(self) -> int:
        return self.capacity - len(self._txs)

    def add(self, tx: Transaction, now_ms: int) -> bool:
        """Add `tx` unless it is already here or the pool is full; True if it was added."""
        if tx.tx_id in self._txs or len(self._txs) >= self.capacity:
            return False
        self._txs[tx.tx_id] = tx
        self._arrival_ms[tx.tx_id] = now_ms
        self._order.append((tx.tx_id, now_ms))
        return True

    def add_all(self, txs: Iterable[Transaction], now_ms: int) -> tuple[Transaction, ...]:
        """Add each of `txs` that is new while there is room; return those added."""
        return tuple(t for t in txs if self.add(t, now_ms))

    def remove(self, tx_ids: Iterator[bytes] | list[bytes]) -> None:
        for tx_id in tx_ids:
            self._txs.pop(tx_id, None)
            self._arrival_ms.pop(tx_id, None)
        if len(self._order) > 2 * len(self._txs) + ORDER_SLACK:
            self._order = deque(self._arrival_ms.items())  # so at most about twice the pool

    def oldest_arrival_ms(self) -> int | None:
        """When the oldest pending tx arrived (amortised constant time)."""
        order = self._order
        while order and self._arrival_ms.get(order[0][0]) != order[0][1]:
            order.popleft()
        return order[0][1] if order else None

    def drop_expired(self, oldest_timestamp_ms: int, keep: Set[bytes]) -> tuple[bytes, ...]:
        """Forget txs stamped before `oldest_timestamp_ms` (no new block may include them)
        except those in `keep` (in blocks already under way); return the ids forgotten."""
        expired = tuple(
            i
            for i, t in self._txs.items()
            if t.timestamp_ms < oldest_timestamp_ms and i not in keep
        )
        self.remove(list(expired))
        return expired

    def oldest(self, exclude: Set[bytes], limit: int) -> tuple[Transaction, ...]:
        """At most `limit` pending txs not in `exclude`, oldest first."""
        return tuple(itertools.islice(self.candidates(exclude), limit))

    def candidates(self, exclude: Set[bytes]) -> Iterator[Transaction]:
        """Pending txs in arrival order, skipping those in `exclude` (already in flight)."""
        return (t for i, t in self._txs.items() if i not in exclude)
