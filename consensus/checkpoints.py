"""Checkpoints: every `checkpoint_interval` blocks, a quorum agreeing on the chain so far.

Owns the checkpoint votes inside the watermark window and the stable checkpoint. A checkpoint
becomes stable when a quorum of validators signed the same block hash at its height *and* this
replica committed that block itself (its own vote is among them); everything at or below it is
then void and may be forgotten. The replica sends its own checkpoints and carries out the
forgetting (`Journal.collect`); this object only counts. It keeps the matching votes of the
last stable checkpoint (`proof`): q signatures that prove it to anyone (docs/protocol.md 13);
the journal persists it with the forgetting, and `restore` takes it back after a restart.
"""

from dataclasses import dataclass

from consensus import messages as m


@dataclass(frozen=True)
class StableProof:
    """The last stable checkpoint: `votes` are (validator index, signature), sorted, q of them,
    each over `Domain.CHECKPOINT || encode([chain_id, height, block_hash])`."""

    height: int
    block_hash: bytes
    votes: tuple[tuple[int, bytes], ...]


class Checkpoints:
    def __init__(self, interval: int, quorum: int) -> None:
        assert interval >= 1
        assert quorum >= 1
        self.interval = interval
        self._quorum = quorum
        self.stable = 0  # height of the last stable checkpoint (0: the genesis)
        self._votes: dict[int, dict[int, tuple[bytes, bytes]]] = {}  # height -> sender -> vote
        self._own: dict[int, bytes] = {}  # height -> hash of the block this replica committed
        self.proof: StableProof | None = None  # the votes of the last stable checkpoint

    def restore(self, proof: StableProof | None) -> None:
        """The stable checkpoint a replica persisted before its restart (journal)."""
        if proof is not None:
            self.stable, self.proof = proof.height, proof

    def is_due(self, height: int) -> bool:
        return height % self.interval == 0

    def own(self, cp: m.Checkpoint, limit: int) -> StableProof | None:
        """Record this replica's own checkpoint; the newly stable checkpoint, if one is."""
        self._own[cp.height] = cp.block_hash
        return self.record(cp, limit)

    def record(self, cp: m.Checkpoint, limit: int) -> StableProof | None:
        """Count a vote (signature already checked) at a height up to `limit`; return the
        checkpoint that became stable by it (with its votes), if one did. Raise
        `InvalidMessage` for a height that has no checkpoint."""
        if not self.is_due(cp.height):
            raise m.InvalidMessage(m.Reason.CHECKPOINT_HEIGHT)
        if not self.stable < cp.height <= limit:
            return None
        votes = self._votes.setdefault(cp.height, {})
        votes.setdefault(cp.sender, (cp.block_hash, cp.signature))
        own = self._own.get(cp.height)
        matching = sum(1 for digest, _ in votes.values() if digest == own)
        if own is None or matching < self._quorum:
            return None
        self.stable = cp.height
        matched = sorted((sender, sig) for sender, (digest, sig) in votes.items() if digest == own)
        self.proof = StableProof(cp.height, own, tuple(matched[: self._quorum]))
        for table in (self._votes, self._own):
            for h in [h for h in table if h <= cp.height]:
                del table[h]
        return self.proof

    def size(self) -> int:
        return sum(len(v) for v in self._votes.values()) + len(self._own)
