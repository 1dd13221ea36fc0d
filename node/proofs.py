"""What an auditor needs to check one tx, or the growth of the chain, against the genesis alone.

Built here from the store, verified here offline (the CLI's `verify-proof` calls
`verify_bundle`). Formats (docs/protocol.md, "Proof bundle"): plain maps whose byte strings are
`bytes` (hex strings in JSON; the verifier takes either).

- A proof bundle: the tx's canonical bytes; the header bytes of its block (whose SHA-256 is the
  block hash); the RFC 9162 inclusion proof of the tx id under the header's tx root; the block's
  commit certificate; and optionally an anchor: a later certified header with the inclusion
  proof of the block hash as leaf `height` under the anchor's history root.
- A checkpoint: a certified head (header bytes and certificate).
- A consistency proof between checkpoints A < B: the RFC 9162 consistency proof from A's history
  root (tree size A) to B's (tree size B), and the inclusion of A's block hash as leaf A in B's.

This module reads the store and never writes it; verification never raises but `InvalidProof`.
"""

from collections.abc import Mapping
from typing import Any, Final

from ledger import merkle
from ledger import tx as txs
from ledger.block import (
    HEADER_VERSION,
    HEIGHT_MAX,
    Block,
    BlockHeader,
    Certificate,
    decode_certificate,
    verify_certificate,
)
from ledger.encoding import decode, encode, expect_bytes, expect_int, expect_list
from ledger.errors import InvalidBlock, InvalidEncoding, InvalidTransaction, LedgerError, StoreError
from ledger.genesis import Genesis
from ledger.primitives import BLOCK_TXS_MAX, DIGEST_BYTES, VALIDATORS_MAX
from ledger.store import BlockStore

BUNDLE_FORMAT: Final = "cityledger-proof-bundle/1"
HEADER_BYTES_MAX: Final = 512


class InvalidProof(LedgerError):
    """A proof bundle, checkpoint or consistency proof that does not verify, with the reason."""


# --- Building --------------------------------------------------------------------------------


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
    ids = [t.tx_id for t in block.txs]
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
        "tx_count": len(ids),
        "header": encode(block.header.to_list()),
        "block_hash": block.hash,
        "tx_proof": merkle.inclusion_proof(ids, index),
        "certificate": cert.encode(),
        "anchor": anchor,
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


# --- Verifying -------------------------------------------------------------------------------


def _bytes(doc: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    value = doc.get(name)
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value) if value.isascii() and value.isalnum() else None
        except ValueError:
            value = None
    if not isinstance(value, bytes) or (length is not None and len(value) != length):
        raise InvalidProof(f"{name}: expected {length or 'some'} bytes (hex in JSON)")
    return value


def _int(doc: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidProof(f"{name}: expected an integer in [{low}, {high}]")
    return value


def _hashes(doc: Mapping[str, Any], name: str) -> list[bytes]:
    value = doc.get(name)
    if not isinstance(value, list) or len(value) > merkle.CONSISTENCY_PROOF_HASHES_MAX:
        raise InvalidProof(f"{name}: expected a list of hashes")
    return [_bytes({name: v}, name, DIGEST_BYTES) for v in value]


def _header(raw: bytes) -> BlockHeader:
    try:
        h = expect_list(decode(raw, HEADER_BYTES_MAX), 8, "header")
        expect_int(h[0], HEADER_VERSION, HEADER_VERSION, "header version")
        return BlockHeader(
            expect_int(h[1], 1, HEIGHT_MAX, "height"), expect_bytes(h[2], DIGEST_BYTES, "prev"),
            expect_bytes(h[3], DIGEST_BYTES, "tx_root"),
            expect_bytes(h[4], DIGEST_BYTES, "history_root"),
            expect_int(h[5], 0, txs.TIMESTAMP_MS_MAX, "timestamp"),
            expect_int(h[6], 0, HEIGHT_MAX, "view"),
            expect_int(h[7], 0, VALIDATORS_MAX - 1, "proposer"),
        )  # fmt: skip
    except InvalidEncoding as exc:
        raise InvalidProof(f"header: {exc}") from None


def verify_checkpoint(doc: Mapping[str, Any], genesis: Genesis) -> BlockHeader:
    """Check a checkpoint's header against its 2f+1 certificate; return the header."""
    if not isinstance(doc, Mapping):
        raise InvalidProof("checkpoint: expected an object")
    header = _header(_bytes(doc, "header"))
    block_hash = header.hash()
    if _bytes(doc, "block_hash", DIGEST_BYTES) != block_hash:
        raise InvalidProof("block_hash is not the hash of the header")
    if _int(doc, "height", 1, HEIGHT_MAX) != header.height:
        raise InvalidProof("height is not the header's height")
    if "history_root" in doc and _bytes(doc, "history_root", DIGEST_BYTES) != header.history_root:
        raise InvalidProof("history_root is not the header's history root")
    try:
        cert: Certificate = decode_certificate(_bytes(doc, "certificate"))
        verify_certificate(cert, Block(header, (), block_hash), genesis)
    except InvalidBlock as exc:
        raise InvalidProof(f"certificate of block {header.height}: {exc}") from None
    return header


def verify_bundle(doc: Mapping[str, Any], genesis: Genesis) -> txs.Transaction:
    """Verify a proof bundle against `genesis` alone; return the proven tx."""
    if not isinstance(doc, Mapping) or doc.get("format") != BUNDLE_FORMAT:
        raise InvalidProof(f"not a proof bundle (format {BUNDLE_FORMAT!r} expected)")
    if doc.get("chain_id") != genesis.chain_id or _bytes(doc, "genesis_hash") != genesis.hash:
        raise InvalidProof("the bundle is for another chain than this genesis")
    try:
        tx = txs.decode_tx(_bytes(doc, "tx"))
        txs.check_signature(tx, txs.check_stateless(tx, genesis))
    except InvalidTransaction as exc:
        raise InvalidProof(f"tx: {exc}") from None
    if _bytes(doc, "tx_id", DIGEST_BYTES) != tx.tx_id:
        raise InvalidProof("tx_id is not the hash of the tx")
    header = verify_checkpoint(
        {"height": doc.get("height"), "header": doc.get("header"),
         "block_hash": doc.get("block_hash"), "certificate": doc.get("certificate")},
        genesis,
    )  # fmt: skip
    index = _int(doc, "index", 0, BLOCK_TXS_MAX - 1)
    size = _int(doc, "tx_count", index + 1, BLOCK_TXS_MAX)
    if not merkle.verify_inclusion(tx.tx_id, index, size, _hashes(doc, "tx_proof"), header.tx_root):
        raise InvalidProof("the tx is not included under the block's tx root")
    anchor = doc.get("anchor")
    if anchor is not None:
        if not isinstance(anchor, Mapping):
            raise InvalidProof("anchor: expected an object")
        top = verify_checkpoint(anchor, genesis)
        proof = _hashes(anchor, "history_proof")
        if top.height <= header.height or not merkle.verify_inclusion(
            header.hash(), header.height, top.height, proof, top.history_root
        ):
            raise InvalidProof("the block is not in the anchor's history")
    return tx


def verify_consistency(doc: Mapping[str, Any], genesis: Genesis) -> tuple[int, int]:
    """Verify a consistency proof between two checkpoints; return their heights."""
    if not isinstance(doc, Mapping):
        raise InvalidProof("expected an object")
    old, new = doc.get("from"), doc.get("to")
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        raise InvalidProof("from and to: expected checkpoints")
    a, b = verify_checkpoint(old, genesis), verify_checkpoint(new, genesis)
    if a.height > b.height:
        raise InvalidProof("from is above to")
    if a.height == b.height:
        if a.hash() != b.hash():
            raise InvalidProof("two different certified blocks at one height")
        return a.height, b.height
    ok = merkle.verify_consistency(
        a.height, b.height, a.history_root, b.history_root, _hashes(doc, "consistency_proof")
    ) and merkle.verify_inclusion(
        a.hash(), a.height, b.height, _hashes(doc, "inclusion_proof"), b.history_root
    )
    if not ok:
        raise InvalidProof(f"the chain at {a.height} is not a prefix of the chain at {b.height}")
    return a.height, b.height
