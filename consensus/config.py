"""The replica's local settings: limits and timings each node may choose for itself.

Everything every validator must agree on is in the genesis (`ledger.genesis.ConsensusParams`);
these only shape how one replica works and how much it holds, never what is valid.
"""

from dataclasses import dataclass

from consensus import messages as m
from consensus.events import FETCH_BLOCKS_MAX


@dataclass(frozen=True)
class ReplicaConfig:
    pool_capacity: int = 100_000
    # Blocks the primary keeps in flight at once. 2, not more: under load the primary then
    # waits for a slot and proposes fewer, larger blocks (every block costs each node a
    # dozen signatures, three writes and a round of messages); at light load blocks rarely
    # overlap anyway.
    pipeline_depth: int = 2
    window: int = 16  # heights above the committed head a replica takes part in
    retransmit_ms: int = 500
    fetch_timeout_ms: int = 2000
    fetch_blocks_max: int = FETCH_BLOCKS_MAX  # fewer per fetch is allowed, never more
    view_change_timeout_max_ms: int = 30_000  # the back-off cap

    def __post_init__(self) -> None:
        assert 1 <= self.pipeline_depth <= self.window <= m.PREPARED_MAX
        assert self.pool_capacity >= 1
        assert 1 <= self.fetch_blocks_max <= FETCH_BLOCKS_MAX
