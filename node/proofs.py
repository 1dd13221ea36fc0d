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

from collections.abc import Iterator
from typing import Any, Final

from consensus.checkpoints import StableProof
from ledger import merkle
from ledger.block import Block, Certificate
from ledger.encoding import encode
from ledger.errors import InvalidTransaction, StoreError
from ledger.gov import history, machine
from ledger.gov.config import Config
from ledger.gov.signers import block_signer, check_block_signature
from ledger.kinds.execute import outcome_leaf
from ledger.proofs import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_GOVERNANCE,
    GOVERNANCE_BLOCKS_MAX,
    GOVERNANCE_TXS_MAX,
)
from ledger.store import BlockStore
from ledger.tx import Transaction

APPROVALS_READ_MAX: Final = 1000  # approvals of one proposal read (one per organisation)


class TooMuchGovernance(Exception):
    """The governance a bundle would carry passes the bundle's limits (docs/protocol.md 14.5):
    such a tx is verified with the whole chain (`cityledger verify`)."""


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
    carried = {}
    if _needs_governance(store, block.txs[index], max(head, height)):
        governance = governance_blocks(store, max(head, height))
        carried = {"format": BUNDLE_FORMAT_GOVERNANCE, "governance": governance}
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
    } | carried


def _needs_governance(store: BlockStore, tx: Transaction, top: int) -> bool:
    """Whether the bundle needs the governance below `top` (docs/protocol.md 14.1): unless the
    genesis alone judges the tx's signer and key as its block did, and the validators and
    parameters in force up to `top` are the genesis's."""
    genesis = store.genesis
    alone = Config(genesis)
    try:
        check_block_signature(tx, block_signer(tx, alone), alone)
    except InvalidTransaction:
        return True
    at = history.configs_for(genesis).at_height(store.rule_state, top - 1).members
    return (at.validators, at.params) != (genesis.validators, genesis.params)


def governance_blocks(store: BlockStore, below: int) -> list[dict[str, Any]]:
    """The certified governance txs that made each change effective below block `below`, by
    block (14.5): every change's proposal and its approvals up to the one that made it
    effective. Raises `TooMuchGovernance` past the bundle's limits."""
    chosen: dict[int, set[int]] = {}
    for height, index in _effective_txs(store, below):
        chosen.setdefault(height, set()).add(index)
    if len(chosen) > GOVERNANCE_BLOCKS_MAX or sum(map(len, chosen.values())) > GOVERNANCE_TXS_MAX:
        raise TooMuchGovernance(
            f"the governance below block {below} passes a bundle's limits "
            f"({GOVERNANCE_BLOCKS_MAX} blocks, {GOVERNANCE_TXS_MAX} txs): verify the chain"
        )
    return [_governance_block(store, h, sorted(chosen[h])) for h in sorted(chosen)]


def _effective_txs(store: BlockStore, below: int) -> Iterator[tuple[int, int]]:
    """(height, index) of the txs that made each change effective below `below`."""
    get = store.rule_state
    version, _ = history.head(get, store.genesis)
    for number in range(1, version + 1):
        height, body, _ = get(history.change_key(number))
        if int(height) >= below:
            return
        proposal_id = _proposal_made_effective(store, int(height), dict(body))
        for key in (machine.PROPOSALS, machine.APPROVALS):
            for at, index, _ in store.record_versions(key + proposal_id, APPROVALS_READ_MAX):
                if at <= int(height):  # later approvals were refused: none is recorded
                    yield at, index


def _proposal_made_effective(store: BlockStore, height: int, body: dict[str, Any]) -> str:
    """The id of the proposal that block `height` made effective with the change `body`."""
    block, _ = _certified(store, height)
    for t, code in zip(block.txs, block.outcomes, strict=True):
        if code or not machine.is_governance(t.key):
            continue
        proposal_id = t.key.rsplit("/", 1)[-1]
        proposal = machine.read_proposal(store.rule_state, proposal_id)
        if proposal and proposal.effective_height == height and proposal.change == body:
            return proposal_id
    raise StoreError(f"no governance tx of block {height} made its recorded change effective")


def _governance_block(store: BlockStore, height: int, indices: list[int]) -> dict[str, Any]:
    block, cert = _certified(store, height)
    ids = [t.tx_id for t in block.txs]
    leaves = [outcome_leaf(t, c) for t, c in zip(ids, block.outcomes, strict=True)]
    return {
        "height": height,
        "header": encode(block.header.to_list()),
        "block_hash": block.hash,
        "certificate": cert.encode(),
        "txs": [
            {
                "index": i,
                "tx": block.txs[i].raw,
                "tx_proof": merkle.inclusion_proof(ids, i),
                "outcome_proof": merkle.inclusion_proof(leaves, i),
            }
            for i in indices
        ],
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


def stable_checkpoint(store: BlockStore, proof: StableProof) -> dict[str, Any]:
    """`GET /v1/checkpoint/stable`: the q signed Checkpoint votes of the last stable checkpoint
    (docs/protocol.md 19.6), each naming its validator by index and id in the set of the
    checkpoint's block (its epoch's, not the genesis's once governance changed the set)."""
    genesis = store.genesis
    members = history.configs_for(genesis).of_block(store.rule_state, proof.height).members
    ids: dict[int, str] = {int(v.index): v.id for v in members.validators}
    return {
        "chain_id": genesis.chain_id,
        "height": proof.height,
        "block_hash": proof.block_hash,
        "votes": [
            {"validator": index, "validator_id": ids.get(index), "signature": signature}
            for index, signature in proof.votes
        ],
    }


def config_proof(store: BlockStore) -> dict[str, Any]:
    """`GET /v1/config/proof`: the certified governance txs that made every change effective up
    to the head (docs/protocol.md 14.6), from which a client holding only the genesis derives
    the validators in force. Raises `TooMuchGovernance` past a bundle's limits.

    Anyone may ask, so the answer is built once per change of the configuration (the change
    log's version, read before the head: a change written in between is then in the list, which
    a later version's request rebuilds anyway) and shared until the next one."""
    version, _ = history.head(store.rule_state, store.genesis)
    head = store.height
    key = (store.genesis.hash, version)
    cached = _config_proofs.get(key)
    if cached is None:
        cached = governance_blocks(store, head + 1)
        _config_proofs.clear()  # one chain per node: only the latest version is asked for
        _config_proofs[key] = cached
    return {
        "chain_id": store.genesis.chain_id,
        "genesis_hash": store.genesis.hash,
        "height": head,
        "governance": cached,
    }


_config_proofs: dict[tuple[bytes, int], list[dict[str, Any]]] = {}  # at most one entry
