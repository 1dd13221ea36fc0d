"""The primary's proposer: when the next block is due, and which pending txs go in it.

Owns when this replica last proposed and the ids of the txs already in flight (in blocks
accepted above the head); it reads the pool and the log, never changes them. It never builds a
PrePrepare nor sends anything: the replica asks it for the block due, if any, and proposes it
through the same path as a peer's block.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ledger import tx as txs
from ledger.block import Block, ChainHead, make_block
from ledger.genesis import ConsensusParams

from consensus.log import Log
from consensus.pool import TxPool


@dataclass(frozen=True)
class Timing:
    """Whether a block may go now, else when it is due (None: nothing to propose)."""

    now: bool
    due_ms: int | None


class Proposer:
    def __init__(
        self, params: ConsensusParams, pipeline_depth: int, pool: TxPool, log: Log,
        is_committed: Callable[[bytes], bool],
    ) -> None:  # fmt: skip
        self.params = params  # of the epoch the replica works in
        self._pipeline_depth = pipeline_depth
        self._pool = pool
        self._log = log
        self._is_committed = is_committed  # the store's answer
        self.last_proposal_ms = 0
        self._in_flight_key: tuple[tuple[int, bytes], ...] = ()
        self._in_flight_ids: frozenset[bytes] = frozenset()

    def in_flight(self) -> frozenset[bytes]:
        """Tx ids of the blocks accepted above the head in this view."""
        # Asked at every event on the primary, while the blocks above the head change only a
        # few times per block: keep the union until they do.
        listed = tuple(self._log.blocks_in_flight())
        key = tuple((h, d) for h, d, _ in listed)
        if key != self._in_flight_key:
            self._in_flight_key = key
            self._in_flight_ids = frozenset().union(*(ids for _, _, ids in listed))
        return self._in_flight_ids

    def next_block(self, head: ChainHead, now_ms: int, view: int, index: int) -> Block | int | None:
        """The block to propose now, on the tip of the blocks in flight; else when one is due
        (None: none is). The replica proposes it through a peer's path."""
        tip = self._log.tip(head)
        in_flight = self.in_flight()
        timing = self.timing(self._pool, in_flight, tip.height - head.height, now_ms)
        if not timing.now:
            return timing.due_ms
        timestamp = max(now_ms, tip.timestamp_ms)
        chosen = self.choose(self._pool, in_flight, timestamp, self._is_committed)
        if not chosen:
            return None
        self.last_proposal_ms = now_ms
        # The rules' verdicts on the chosen txs, in the state below the new block.
        outcomes = self._log.outcomes(tip.height + 1, head, chosen, timestamp)
        return make_block(tip, chosen, timestamp, view, index, outcomes)

    def timing(self, pool: TxPool, in_flight: frozenset[bytes], blocks: int, now_ms: int) -> Timing:
        """`blocks` are in flight above the head."""
        if blocks >= self._pipeline_depth or not pool:
            return Timing(now=False, due_ms=None)
        unproposed = len(pool) - pool.count_of(in_flight)
        if unproposed <= 0:
            return Timing(now=False, due_ms=None)
        # At most one block per interval; one more interval per block still in flight, so
        # that a busy primary gathers larger blocks (each block costs every node a round of
        # signed votes and writes) while an idle one still proposes after one interval.
        due = self.last_proposal_ms + self.params.block_interval_ms * (1 + blocks)
        full = unproposed >= self.params.block_txs_max
        return Timing(now_ms >= due or full, due)

    def choose(
        self, pool: TxPool, in_flight: frozenset[bytes], timestamp_ms: int,
        is_committed: Callable[[bytes], bool],
    ) -> tuple[txs.Transaction, ...]:  # fmt: skip
        """Pending txs for a block stamped `timestamp_ms`, oldest first, within the limits."""
        params = self.params
        oldest = timestamp_ms - params.tx_ttl_ms  # older ones leave the pool at the next tick
        chosen: list[txs.Transaction] = []
        size = 0
        for tx in pool.candidates(in_flight):
            if len(chosen) >= params.block_txs_max or size + len(tx.raw) > params.block_bytes_max:
                break
            if not oldest <= tx.timestamp_ms <= timestamp_ms + params.clock_skew_ms:
                continue
            if is_committed(tx.tx_id):
                continue
            chosen.append(tx)
            size += len(tx.raw)
        return tuple(chosen)
