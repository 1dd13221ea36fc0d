"""Proof bundles, checkpoints and consistency proofs, built from the store (docs/protocol.md, 14).

Formats: plain maps whose byte strings are `bytes` (rendered as hex in JSON, bin in msgpack).
- A checkpoint: a certified head (header bytes and certificate) with its history root.
- A proof bundle: the tx's canonical bytes; the header bytes of its block (whose SHA-256 is the
  block hash, and which binds the tx tree's root and size); the RFC 9162 inclusion proof of the
  tx id at its index; the block's commit certificate; and, when the block is not the head, an
  anchor: the head's checkpoint with the inclusion proof of the block hash as leaf `height` of
  its history tree.
- A consistency proof between checkpoints A ≤ B: the RFC 9162 consistency proof from A's
  history root (tree size A) to B's, and the inclusion of A's block hash as leaf A in B's.

They are verified, by anyone and offline, with `ledger.proofs` alone. This module reads the
store and never writes it.
"""

from typing import Any

from consensus.checkpoints import StableProof
from ledger import merkle
from ledger.block import Block, Certificate
from ledger.encoding import encode
from ledger.errors import StoreError
from ledger.genesis import Genesis
from ledger.kinds.execute import outcome_leaf
from ledger.proofs import BUNDLE_FORMAT
from ledger.store import BlockStore


def _certified(store: BlockStore, height: int) -> tuple[Block, Certificate]:
    block, cert = store.block(height), store.certificate(height)
    if block is None or cert is None:
        raise StoreError(f"block {height} or its certificate is missing from the store")
    return block, cert


def checkpoint(store: BlockStore, height: int) -> dict[str, Any]:
    """The certified head at `height` (1..store height)."""
    block, cert = _certified(store, height)
    return {
        "height": height,
        "block_hash": block.hash,
        "history_root": block.header.history_root,
        "header": encode(block.header.to_list()),
        "certificate": cert.encode(),
    }


def bundle(store: BlockStore, tx_id: bytes) -> dict[str, Any] | None:
    """The proof bundle of a committed tx, anchored at the current head; None if unknown."""
    location = store.tx_location(tx_id)
    if location is None:
        return None
    height, index = location
    block, cert = _certified(store, height)
    head = store.height
    anchor = None
    if head > height:
        anchor = {
            **checkpoint(store, head),
            "history_proof": store.history_inclusion_proof(head, height),
        }
    return {
        "format": BUNDLE_FORMAT,
        "chain_id": store.genesis.chain_id,
        "genesis_hash": store.genesis.hash,
        "tx_id": tx_id,
        "tx": block.txs[index].raw,
        "height": height,
        "index": index,
        "tx_count": block.header.tx_count,
        "header": encode(block.header.to_list()),
        "block_hash": block.hash,
        "tx_proof": merkle.inclusion_proof([t.tx_id for t in block.txs], index),
        "certificate": cert.encode(),
        "anchor": anchor,
        "outcome": block.outcomes[index],
        "outcome_proof": merkle.inclusion_proof(
            [outcome_leaf(t.tx_id, c) for t, c in zip(block.txs, block.outcomes, strict=True)],
            index,
        ),
    }


def consistency(store: BlockStore, old: int, new: int) -> dict[str, Any]:
    """Proof that the chain at certified height `old` is a prefix of the chain at `new`."""
    assert 1 <= old <= new <= store.height
    return {
        "from": checkpoint(store, old),
        "to": checkpoint(store, new),
        "consistency_proof": store.history_consistency_proof(old, new) if old < new else [],
        "inclusion_proof": store.history_inclusion_proof(new, old) if old < new else [],
    }


def raw_pairs(store: BlockStore, low: int, high: int, bytes_max: int) -> list[tuple[bytes, bytes]]:
    """The stored bytes of blocks `low..high` and their certificates, in height order: fewer
    when a block is missing or the answer would pass `bytes_max` (never fewer than one held)."""
    pairs: list[tuple[bytes, bytes]] = []
    size = 0
    for height in range(low, high + 1):
        block, cert = store.raw_block(height), store.raw_certificate(height)
        if block is None or cert is None or (pairs and size + len(block) > bytes_max):
            break
        pairs.append((block, cert))
        size += len(block) + len(cert)
    return pairs


def chain_page(store: BlockStore, low: int, high: int, bytes_max: int) -> dict[str, Any]:
    """`GET /v1/chain`: certified blocks as their exact bytes, for an auditor or a backup that
    verifies them itself (docs/protocol.md 19.6)."""
    pairs = raw_pairs(store, low, high, bytes_max)
    return {
        "head": store.height,
        "blocks": [
            {"height": low + i, "block": block, "certificate": cert}
            for i, (block, cert) in enumerate(pairs)
        ],
    }


def stable_checkpoint(genesis: Genesis, proof: StableProof) -> dict[str, Any]:
    """`GET /v1/checkpoint/stable`: the q signed Checkpoint votes of the last stable checkpoint
    (docs/protocol.md 19.6), each naming its validator by index and id."""
    ids: dict[int, str] = {int(v.index): v.id for v in genesis.validators}
    return {
        "chain_id": genesis.chain_id,
        "height": proof.height,
        "block_hash": proof.block_hash,
        "votes": [
            {"validator": index, "validator_id": ids.get(index), "signature": signature}
            for index, signature in proof.votes
        ],
    }
