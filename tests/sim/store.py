"""The simulator's block store: an in-memory, append-only list of certified blocks.

It owns the same promise as the LevelDB store: a block enters only if it validly extends the
head (height, previous hash, history root, every tx valid and new to the chain) and carries a
commit certificate of a quorum of valid votes of the set of the block's epoch (the one in force
after the head, docs/protocol.md section 20.8: a block certified by another set is refused). A
rejected append is a replica bug (the replica emitted `CommitBlock` for something the ledger
rules refuse), so it raises `StoreRejected` for the simulator to report. Every append is
durable at once, like one synced write batch.
"""

from typing import Any

from ledger import block as blocks
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis
from ledger.gov.history import config_of


class StoreRejected(Exception):
    """A `CommitBlock` the ledger rules refuse; `reason` says which rule."""


class MemoryStore:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.head = blocks.ChainHead.genesis(genesis)
        self.chain: list[tuple[blocks.Block, blocks.Certificate]] = []
        self._tx_height: dict[bytes, int] = {}
        self.rules = MemoryRules(self)  # the committed rule state, as the replica reads it

    def committed_head(self) -> blocks.ChainHead:
        return self.head

    @property
    def height(self) -> int:
        return self.head.height

    def is_committed(self, tx_id: bytes) -> bool:
        return tx_id in self._tx_height

    def outcome(self, tx_id: bytes) -> str | None:
        """The committed tx's outcome ("" accepted, else its reason code); None: not committed."""
        height = self._tx_height.get(tx_id)
        if height is None:
            return None
        block = self.chain[height - 1][0]
        return next(o for t, o in zip(block.txs, block.outcomes, strict=True) if t.tx_id == tx_id)

    def append(self, block: blocks.Block, certificate: blocks.Certificate) -> None:
        """Append `block` at height + 1, or raise `StoreRejected` and change nothing."""
        try:
            certifying = config_of(self.rules.get, self.genesis).members  # the block's epoch
            executed = blocks.check_block(
                block,
                self.head,
                self.genesis,
                is_committed=self.is_committed,
                state=self.rules.get,
            )
            blocks.verify_certificate(certificate, block, certifying)
        except InvalidBlock as exc:
            raise StoreRejected(str(exc)) from None
        self.chain.append((block, certificate))
        self.rules.entries.update(executed.writes)
        self.head = self.head.advance(block)
        for tx in block.txs:
            self._tx_height[tx.tx_id] = block.height
        assert len(self.chain) == self.head.height

    def get(self, height: int) -> tuple[blocks.Block, blocks.Certificate]:
        assert 1 <= height <= self.height
        return self.chain[height - 1]

    def range(
        self, from_height: int, to_height: int
    ) -> tuple[tuple[blocks.Block, blocks.Certificate], ...]:
        """Certified blocks from_height..to_height that this store holds (maybe none)."""
        low = max(from_height, 1)
        high = min(to_height, self.height)
        return tuple(self.chain[low - 1 : high]) if low <= high else ()


class MemoryRules:
    """The store's rule state (ledger/kinds), as `consensus.rulestate.CommittedState`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.entries: dict[bytes, Any] = {}

    @property
    def height(self) -> int:
        return self._store.height

    def get(self, key: bytes) -> Any:
        return self.entries.get(key)
