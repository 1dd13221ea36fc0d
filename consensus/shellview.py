"""What the shell (the node, the simulator) reads of a replica: read-only views of its parts.

`Replica` (consensus/replica.py) inherits these; they change nothing and own nothing.
"""

from collections import Counter

from ledger import tx as txs

from consensus import messages as m
from consensus.chain import Chain
from consensus.checkpoints import Checkpoints
from consensus.inbox import Inbox
from consensus.log import Log
from consensus.pool import TxPool
from consensus.viewstate import ViewState


class ShellView:
    counters: Counter[str]
    chain: Chain
    pool: TxPool
    log: Log
    views: ViewState
    inbox: Inbox
    checkpoints: Checkpoints

    @property
    def view(self) -> int:
        return self.views.view

    @property
    def in_view_change(self) -> bool:
        return self.views.in_view_change

    @property
    def primary(self) -> int:
        return self.views.primary

    @property
    def committed_height(self) -> int:
        return self.chain.height

    @property
    def pending(self) -> int:
        return len(self.pool)

    @property
    def pool_free(self) -> int:
        return self.pool.free

    def has_pending(self, tx_id: bytes) -> bool:
        return tx_id in self.pool

    def pending_tx(self, tx_id: bytes) -> txs.Transaction | None:
        """The pooled tx with this id (the shell decodes peer messages against the pool)."""
        return self.pool.get(tx_id)

    def screen(self, msg: m.Message) -> bool:
        """False if the replica drops `msg` (consensus/inbox.py). The node screens a PrePrepare
        before it admits the block's unknown txs: a forgery costs one signature check."""
        return self.inbox.admits(msg, self.views, self.chain)

    def log_size(self) -> int:
        """Entries in every per-height and per-view structure (bounded, whatever the length)."""
        return self.log.size() + self.checkpoints.size() + self.views.size() + self.inbox.size()
