"""Censorship resistance: PBFT's per-request timer, for a primary that commits other work.

The progress timer alone cannot see a primary that keeps committing blocks while it leaves one
client's transactions out forever: every commit is progress. So a replica also watches the
oldest transaction in its pool. It is censored, and the replica asks for a view change, when

1. it has waited at least the view-change timeout T (since it arrived here, or since the
   current view began, whichever is later), and
2. a block *with room for it* (fewer than `block_txs_max` txs, and room for a tx of the
   largest size) committed through consensus more than T/2 after that moment.

Why this cannot fire against a correct primary: every replica relays what it pools to every
other at once (and re-sends it to the primary while it waits), and a correct primary proposes
its pool oldest first, so within T/2 of the tx reaching this replica it is either in the next
block or the blocks are full. Full blocks (an overloaded, honest primary) never count, nor do
blocks taken from peers by state transfer (a lagging replica must not ask for a view change
alone). Condition 2 is what makes a censoring primary visible: it keeps committing other txs
in blocks that had room.
"""

from ledger.block import Block
from ledger.genesis import ConsensusParams
from ledger.primitives import TX_BYTES_MAX

from consensus.pool import TxPool


def has_room(block: Block, params: ConsensusParams) -> bool:
    """Could the proposer have added one more tx of any size to `block`?"""
    size = sum(len(t.raw) for t in block.txs)
    return len(block.txs) < params.block_txs_max and size + TX_BYTES_MAX <= params.block_bytes_max


def censorship_deadline(
    oldest_arrival_ms: int | None, view_since_ms: int, roomy_commit_ms: int | None,
    timeout_ms: int,
) -> int | None:  # fmt: skip
    """When the oldest pooled tx counts as censored (None: it does not, or there is none)."""
    if oldest_arrival_ms is None or roomy_commit_ms is None:
        return None
    waiting_since = max(oldest_arrival_ms, view_since_ms)
    if roomy_commit_ms <= waiting_since + timeout_ms // 2:
        return None  # nothing with room committed since: an honest primary may be busy
    return waiting_since + timeout_ms


class CensorshipWatch:
    """What the rule needs to remember: when the current view began here, and when the last
    block with room committed here through consensus."""

    def __init__(self, params: ConsensusParams) -> None:
        self.params = params
        self._view_since_ms = 0
        self._roomy_commit_ms: int | None = None

    def new_view(self, now_ms: int) -> None:
        self._view_since_ms = now_ms

    def committed(self, block: Block, now_ms: int) -> None:
        """`block` committed through consensus (never call it for state transfer)."""
        if has_room(block, self.params):
            self._roomy_commit_ms = now_ms

    def deadline_ms(self, pool: TxPool) -> int | None:
        return censorship_deadline(
            pool.oldest_arrival_ms(), self._view_since_ms, self._roomy_commit_ms,
            self.params.view_change_timeout_ms,
        )  # fmt: skip

    def passed_over(self, pool: TxPool, now_ms: int) -> bool:
        """Blocks with room committed while our oldest tx waited a quarter of the timeout:
        time to re-send it to the primary, before we hold the primary to it."""
        oldest = pool.oldest_arrival_ms()
        if oldest is None or self._roomy_commit_ms is None:
            return False
        since = max(oldest, self._view_since_ms)
        patience = self.params.view_change_timeout_ms // 4
        return self._roomy_commit_ms > since and now_ms - since >= patience
