"""One consensus instance: a height in the current view, and its phase transitions.

This module owns every phase transition of an instance: a block is accepted (pre-prepared),
becomes prepared on a quorum of matching Prepares, and can commit on a quorum of matching
Commits. Votes are counted per block hash; a sender's first vote in a phase is the only one
that counts, so an equivocating sender cannot vote twice.
"""

from dataclasses import dataclass, field

from ledger.block import Block, Certificate, ChainHead

from consensus.blocktime import stamp_in_bounds
from consensus.messages import Commit, InvalidMessage, Prepare, PreparedProof, PrePrepare, Reason


def check_proposal(pp: PrePrepare, primary: int, now_ms: int) -> None:
    """Raise `InvalidMessage` unless `pp` is a proposal of `primary`'s own block for its view
    and height, stamped within the bounds of our clock (consensus/blocktime.py)."""
    header = pp.block.header
    if pp.sender != primary or header.proposer != pp.sender:
        raise InvalidMessage(Reason.NOT_PRIMARY, "pre-prepare")
    if pp.block.height != pp.height or header.view != pp.view:
        raise InvalidMessage(Reason.BLOCK_MISMATCH)
    if not stamp_in_bounds(header.timestamp_ms, now_ms):
        raise InvalidMessage(Reason.STAMP, f"{header.timestamp_ms} at {now_ms}")


@dataclass
class Instance:
    height: int
    view: int
    block: Block | None = None
    head_after: ChainHead | None = None  # the chain head once `block` is appended
    tx_ids: frozenset[bytes] = frozenset()
    checked: bool = False  # `block` passed check_block against its parent here (not restored)
    prepared: bool = False
    own_pre_prepare: PrePrepare | None = None  # kept for retransmission
    own_prepare: Prepare | None = None
    own_commit: Commit | None = None
    _prepare_by: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # sender -> vote
    _commit_by: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)

    def accept(self, block: Block, parent: ChainHead) -> None:
        assert self.block is None
        assert block.height == self.height
        self.block = block
        self.head_after = parent.advance(block)
        self.tx_ids = frozenset(t.tx_id for t in block.txs)

    def add_prepare(self, sender: int, block_hash: bytes, signature: bytes) -> None:
        self._prepare_by.setdefault(sender, (block_hash, signature))

    def add_commit(self, sender: int, block_hash: bytes, signature: bytes) -> None:
        self._commit_by.setdefault(sender, (block_hash, signature))

    def add_vote(self, vote: Prepare | Commit) -> None:
        """A peer's Prepare or Commit (signature checked) for this height."""
        add = self.add_prepare if isinstance(vote, Prepare) else self.add_commit
        add(vote.sender, vote.block_hash, vote.signature)

    def prepare_vote(self, view: int, sender: int) -> Prepare:
        """`sender`'s (unsigned) Prepare for the accepted block."""
        assert self.block is not None
        return Prepare(view, self.height, self.block.hash, sender)

    def commit_vote(self, view: int, sender: int) -> Commit:
        """`sender`'s (unsigned) Commit for the accepted block."""
        assert self.block is not None
        return Commit(view, self.height, self.block.hash, sender)

    def vote(self, own: Prepare | Commit) -> None:
        """This replica's own (signed) vote for the accepted block: counted, and kept to send
        again."""
        assert self.block is not None
        assert own.block_hash == self.block.hash
        if isinstance(own, Prepare):
            self.own_prepare = own
        else:
            self.own_commit = own
        self.add_vote(own)

    def _votes(self, by: dict[int, tuple[bytes, bytes]]) -> tuple[tuple[int, bytes], ...]:
        if self.block is None:
            return ()
        digest = self.block.hash
        return tuple(sorted((s, sig) for s, (h, sig) in by.items() if h == digest))

    def reaches_prepared(self, quorum: int) -> bool:
        """True exactly once: when the accepted block first has quorum matching Prepares."""
        if self.prepared or self.block is None:
            return False
        self.prepared = len(self._votes(self._prepare_by)) >= quorum
        return self.prepared

    def can_commit(self, quorum: int) -> bool:
        return self.block is not None and len(self._votes(self._commit_by)) >= quorum

    def prepared_proof(self, quorum: int) -> PreparedProof:
        assert self.prepared
        assert self.block is not None
        return PreparedProof(
            self.view, self.height, self.block.hash, self._votes(self._prepare_by)[:quorum]
        )

    def certificate(self, quorum: int) -> Certificate:
        assert self.block is not None
        votes = self._votes(self._commit_by)[:quorum]
        assert len(votes) >= quorum
        return Certificate(self.height, self.block.hash, self.view, votes)

    def vote_count(self) -> int:
        """Entries held, for the memory-bound checks."""
        return len(self._prepare_by) + len(self._commit_by)
