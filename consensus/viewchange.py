"""View change rules: what a valid ViewChange is, and what a NewView re-proposes.

Every replica recomputes the selection from the quorum of ViewChanges in a NewView with the
same pure function, so a new primary cannot re-propose anything but what the rules give.

Why the selection is safe: a replica sends Commit for height h only after it prepared h and
sent Commit for h-1 in the same view (or h-1 is committed), so a block committed anywhere was
prepared, with all its uncommitted ancestors, by f+1 honest replicas (a quorum less the f
Byzantine); any quorum of ViewChanges shares f+1 replicas with that quorum, so includes one of
them. The highest committed head among the ViewChanges (proven by its
certificate) is the base; above it, each height takes the prepared block of the highest view,
and the selection stops at the first height with no proof. ViewChanges name blocks by hash, so
the rest of the rule waits for the blocks themselves (`linked`): the re-proposal stops at the
first block that does not extend the one below (such a block cannot have been committed).
Every replica that re-proposes holds the same blocks, since a hash names one block.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from ledger import block as blocks
from ledger import crypto
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis

from consensus.epoch import Epoch
from consensus.messages import InvalidMessage, PreparedProof, Reason, ViewChange, prepare_payload


@dataclass(frozen=True)
class Selection:
    base_height: int
    base_hash: bytes
    base_sender: int  # a replica that proved the base: fetch missing blocks from it
    hashes: tuple[bytes, ...]  # of the blocks at heights base_height+1, base_height+2, ...
    # Per height, the replicas that should hold its block: those whose proof names it, then
    # the signers of its Prepares (each accepted it, and keeps it while it is above its head).
    holders: tuple[tuple[int, ...], ...]


def check_view_change(vc: ViewChange, epoch: Epoch, window: int) -> None:
    """Raise `InvalidMessage` unless `vc`'s content is valid (its signature is checked apart):
    its head's certificate by the set of the head's epoch, its prepared proofs (above the
    head) by the set of `epoch`, the one the replica works in."""
    genesis = epoch.members
    if vc.certificate is None:
        if vc.committed_height != 0 or vc.committed_hash != genesis.hash:
            raise InvalidMessage(Reason.VIEW_CHANGE, "a head above genesis needs its certificate")
    else:
        cert = vc.certificate
        if cert.height != vc.committed_height or cert.block_hash != vc.committed_hash:
            raise InvalidMessage(Reason.VIEW_CHANGE, "certificate does not match the claimed head")
        certifying = epoch.set_of(cert.height)
        if certifying is None:
            raise InvalidMessage(Reason.VIEW_CHANGE, "a head below the epochs this replica knows")
        try:
            blocks.verify_certificate_votes(cert, certifying)
        except InvalidBlock as exc:
            raise InvalidMessage(Reason.VIEW_CHANGE, str(exc)) from None
    heights = [p.height for p in vc.prepared]
    if heights != sorted(set(heights)):
        raise InvalidMessage(
            Reason.VIEW_CHANGE, "prepared proofs not in strictly increasing height"
        )
    for proof in vc.prepared:
        if not vc.committed_height < proof.height <= vc.committed_height + window:
            raise InvalidMessage(Reason.VIEW_CHANGE, "prepared proof outside the watermark window")
        if proof.view >= vc.new_view:
            raise InvalidMessage(Reason.VIEW_CHANGE, "prepared proof from a view not yet left")
        check_prepared_proof(proof, genesis)


def check_prepared_proof(proof: PreparedProof, genesis: Genesis) -> None:
    senders = [s for s, _ in proof.prepares]
    if senders != sorted(set(senders)) or len(senders) < genesis.quorums.commit:
        raise InvalidMessage(Reason.PREPARED_PROOF, "needs a quorum of distinct sorted senders")
    for sender, signature in proof.prepares:
        if sender >= len(genesis.validators):
            raise InvalidMessage(Reason.PREPARED_PROOF, "unknown sender")
        payload = prepare_payload(
            genesis.chain_id, sender, proof.view, proof.height, proof.block_hash
        )
        if not crypto.verify(
            genesis.validators[sender].key, crypto.Domain.PEER, payload, signature
        ):
            raise InvalidMessage(Reason.PREPARED_PROOF, "bad prepare signature")


def select(view_changes: Sequence[ViewChange], window: int) -> Selection:
    """The blocks a NewView re-proposes, by hash, computed from its ViewChanges (all valid)."""
    assert view_changes
    base = max(view_changes, key=lambda vc: (vc.committed_height, -vc.sender))
    chosen: list[bytes] = []
    holders: list[tuple[int, ...]] = []
    for height in range(base.committed_height + 1, base.committed_height + window + 1):
        proofs = [(vc.sender, p) for vc in view_changes for p in vc.prepared if p.height == height]
        if not proofs:
            break
        best = max((p for _, p in proofs), key=lambda p: p.view)
        named = [s for s, p in proofs if p.block_hash == best.block_hash]
        signers = [s for s, _ in best.prepares if s not in named]
        chosen.append(best.block_hash)
        holders.append(tuple(named + signers))
    return Selection(
        base.committed_height, base.committed_hash, base.sender, tuple(chosen), tuple(holders)
    )


def linked(prev_hash: bytes, chosen: Sequence[blocks.Block]) -> tuple[blocks.Block, ...]:
    """The chosen blocks that extend `prev_hash` one on the other, up to the first that does
    not (it cannot have been committed, nor anything above it)."""
    chain: list[blocks.Block] = []
    for block in chosen:
        if block.header.prev_hash != prev_hash:
            break
        chain.append(block)
        prev_hash = block.hash
    return tuple(chain)
