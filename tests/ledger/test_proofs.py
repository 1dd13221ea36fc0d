"""ledger.proofs, the one verifier of proof bundles, checkpoints and consistency proofs.

Every valid one verifies: as a map of bytes, as JSON and as a MessagePack or JSON file. Every
one-byte change of its content (each byte of each byte string, each integer, each text, each
field name), each byte of its file, any other value in any field and any input at all is
refused with `InvalidProof`, and nothing else. Bundles are built here from a factory chain with
`ledger.merkle` alone, as docs/protocol.md 14 describes them; node/proofs.py builds the same
from a store (tests/node/test_proofs.py).
"""

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle, proofs
from ledger import tx as txs
from ledger.block import Block, Certificate, ChainHead, make_block
from ledger.encoding import encode
from ledger.genesis import Genesis
from ledger.kinds.execute import outcome_leaf
from tests import factory

BLOCKS = 6
TXS = 3
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Chain:
    """Certified blocks 1..BLOCKS and the proofs about them, built by the protocol's rules."""

    net: factory.Network
    blocks: tuple[Block, ...]  # blocks[h - 1] is block h
    certs: tuple[Certificate, ...]

    @property
    def genesis(self) -> Genesis:
        return self.net.genesis

    def leaves(self, size: int) -> list[bytes]:
        """The history tree's leaves 0..size-1: the genesis hash, then block hashes."""
        return [self.genesis.hash, *(b.hash for b in self.blocks)][:size]

    def checkpoint(self, height: int) -> dict[str, Any]:
        block = self.blocks[height - 1]
        return {
            "height": height, "block_hash": block.hash,
            "history_root": block.header.history_root, "header": encode(block.header.to_list()),
            "certificate": self.certs[height - 1].encode(),
        }  # fmt: skip

    def bundle(self, height: int, index: int, anchor: int | None = BLOCKS) -> dict[str, Any]:
        block = self.blocks[height - 1]
        ids = [t.tx_id for t in block.txs]
        top = None
        if anchor is not None and anchor > height:
            proof = merkle.inclusion_proof(self.leaves(anchor), height)
            top = {**self.checkpoint(anchor), "history_proof": proof}
        return {
            "format": proofs.BUNDLE_FORMAT, "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash, "tx_id": ids[index], "tx": block.txs[index].raw,
            "height": height, "index": index, "tx_count": len(ids),
            "header": encode(block.header.to_list()), "block_hash": block.hash,
            "tx_proof": merkle.inclusion_proof(ids, index),
            "certificate": self.certs[height - 1].encode(), "anchor": top,
            "outcome": block.outcomes[index],
            "outcome_proof": merkle.inclusion_proof(
                [outcome_leaf(t, c) for t, c in zip(ids, block.outcomes, strict=True)], index
            ),
        }  # fmt: skip

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        leaves = self.leaves(new)
        return {
            "from": self.checkpoint(old), "to": self.checkpoint(new),
            "consistency_proof": merkle.consistency_proof(leaves, old) if old < new else [],
            "inclusion_proof": merkle.inclusion_proof(leaves, old) if old < new else [],
        }  # fmt: skip


def build(net: factory.Network) -> Chain:
    pairs = list(factory.chain(net, BLOCKS, TXS))
    return Chain(net, tuple(b for b, _ in pairs), tuple(c for _, c in pairs))


@pytest.fixture(scope="module")
def chain() -> Chain:
    return build(factory.network())


def hexed(value: Any) -> Any:
    """`value` as JSON carries it: every byte string as lowercase hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hexed(v) for v in value]
    return value


def refused(check: Any, doc: Any, genesis: Genesis, match: str | None = None) -> None:
    with pytest.raises(proofs.InvalidProof, match=match):
        check(doc, genesis)


# --- Valid bundles ---------------------------------------------------------------------------


def test_every_tx_verifies_as_bytes_json_and_files(chain: Chain) -> None:
    for height in range(1, BLOCKS + 1):
        for index, tx in enumerate(chain.blocks[height - 1].txs):
            doc = chain.bundle(height, index)
            as_json = json.dumps(hexed(doc), indent=2).encode()
            as_msgpack = msgpack.packb(doc, use_bin_type=True)
            for form in (doc, hexed(doc), proofs.parse(as_json), proofs.parse(as_msgpack)):
                proven = proofs.verify_bundle(form, chain.genesis)
                assert proven.tx == tx
                assert proven.tx.tx_id == tx.tx_id
                assert (proven.block.header.height, proven.index, proven.tx_count) == (
                    height, index, TXS,
                )  # fmt: skip
                assert proven.block.block_hash == chain.blocks[height - 1].hash
                anchor = proven.anchor
                assert (anchor is None) == (height == BLOCKS)
                assert anchor is None or anchor.header.height == BLOCKS


def test_a_block_is_anchored_under_every_later_head_or_none(chain: Chain) -> None:
    for height in range(1, BLOCKS + 1):
        for top in (None, *range(height + 1, BLOCKS + 1)):
            proven = proofs.verify_bundle(chain.bundle(height, 1, top), chain.genesis)
            assert (proven.anchor and proven.anchor.header.height) == top


# --- Every altered byte fails ----------------------------------------------------------------


def _leaves(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every scalar and every empty container of a JSON document, with its path."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def _set(doc: Any, path: Path_, value: Any) -> Any:
    out = copy.deepcopy(doc)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def _renamed(doc: Any, path: Path_) -> Any:
    """`doc` with the field name at `path` changed in its last character."""
    holder = doc
    for step in path[:-1]:
        holder = holder[step]
    name = path[-1]
    assert isinstance(name, str)
    other = name[:-1] + chr(ord(name[-1]) ^ 0x01)
    renamed = {(other if k == name else k): v for k, v in holder.items()}
    return _set(doc, path[:-1], renamed) if path[:-1] else renamed


def alterations(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every one-byte change of a JSON document's content: each byte of each hex value (one bit
    flipped) and its upper-case spelling, each integer up and down, each text, each field name."""
    for path, value in _leaves(doc):
        where = "/".join(map(str, path))
        if isinstance(value, str) and len(value) % 2 == 0 and set(value) <= set("0123456789abcdef"):
            raw = bytes.fromhex(value)
            for i in range(len(raw)):
                flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
                yield f"{where}[{i}]", _set(doc, path, flipped.hex())
            if any(c.isalpha() for c in value):
                yield f"{where} in upper case", _set(doc, path, value.upper())
        elif isinstance(value, str):
            yield f"{where} text", _set(doc, path, value[:-1] + chr(ord(value[-1]) ^ 0x01))
        elif isinstance(value, int):
            yield f"{where} + 1", _set(doc, path, value + 1)
            if value > 0:
                yield f"{where} - 1", _set(doc, path, value - 1)
    names = {
        path[:depth]
        for path, _ in _leaves(doc)
        for depth in range(1, len(path) + 1)
        if isinstance(path[depth - 1], str)
    }
    for path in sorted(names, key=str):
        yield f"{'/'.join(map(str, path))} renamed", _renamed(doc, path)


def assert_every_alteration_fails(doc: dict[str, Any], check: Any, genesis: Genesis) -> int:
    count = 0
    for where, altered in alterations(hexed(doc)):
        try:
            check(altered, genesis)
        except proofs.InvalidProof:
            count += 1
        else:
            pytest.fail(f"altered {where} still verifies")
    return count


@pytest.mark.parametrize(("height", "index"), [(1, 0), (2, 1), (3, 2), (BLOCKS, 2)])
def test_every_altered_byte_of_a_bundle_fails(chain: Chain, height: int, index: int) -> None:
    doc = chain.bundle(height, index)
    paths = {p for p, _ in _leaves(doc)}
    assert {("index",), ("tx_count",), ("height",)} <= paths
    assert assert_every_alteration_fails(doc, proofs.verify_bundle, chain.genesis) > 500


@pytest.mark.parametrize("form", ["json", "msgpack"])
def test_every_flipped_byte_of_a_bundle_file_fails(chain: Chain, form: str) -> None:
    doc = chain.bundle(2, 1)
    data = (
        json.dumps(hexed(doc)).encode() if form == "json" else msgpack.packb(doc, use_bin_type=True)
    )
    proofs.verify_bundle(proofs.parse(data), chain.genesis)
    for i in range(len(data)):
        altered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        with pytest.raises(proofs.InvalidProof):
            proofs.verify_bundle(proofs.parse(altered), chain.genesis)


def test_the_header_pins_the_position(chain: Chain) -> None:
    """The same path verifies at several (index, size) of one root (ledger/merkle.py): without
    the header's tx_count, a prover could claim another index or another number of txs."""
    doc = chain.bundle(2, 2)
    tx_id, header = doc["tx_id"], chain.blocks[1].header
    assert merkle.verify_inclusion(tx_id, 2, 3, doc["tx_proof"], header.tx_root)
    assert merkle.verify_inclusion(tx_id, 1, 2, doc["tx_proof"], header.tx_root)
    refused(proofs.verify_bundle, dict(doc, index=1, tx_count=2), chain.genesis, "tx_count")
    refused(proofs.verify_bundle, dict(doc, index=1), chain.genesis, "index 1 of 3")
    refused(proofs.verify_bundle, dict(doc, index=3), chain.genesis, "not below")
    first = chain.bundle(2, 0)
    assert merkle.verify_inclusion(first["tx_id"], 0, 4, first["tx_proof"], header.tx_root)
    refused(proofs.verify_bundle, dict(first, tx_count=4), chain.genesis, "tx_count")


def test_parts_of_other_bundles_fail(chain: Chain) -> None:
    doc, other = chain.bundle(2, 0), chain.bundle(3, 0)
    swaps = {
        "another block's tx": ("tx", "tx_id"),
        "another block's header": ("header", "block_hash", "height"),
        "another block's certificate": ("certificate",),
        "another block's tx proof": ("tx_proof",),
        "another block's anchor proof": ("anchor",),
    }
    for what, names in swaps.items():
        try:
            proofs.verify_bundle(dict(doc, **{n: other[n] for n in names}), chain.genesis)
        except proofs.InvalidProof:
            continue
        pytest.fail(f"{what} still verifies")
    at_itself = dict(doc, anchor={**chain.checkpoint(2), "history_proof": []})
    refused(proofs.verify_bundle, at_itself, chain.genesis, "not above block 2")


def test_fields_are_exactly_the_known_ones(chain: Chain) -> None:
    doc = hexed(chain.bundle(2, 1))
    assert set(doc) == proofs.BUNDLE_FIELDS
    assert set(doc["anchor"]) == proofs.ANCHOR_FIELDS
    for name in proofs.BUNDLE_FIELDS - {"format"}:
        missing = {k: v for k, v in doc.items() if k != name}
        refused(proofs.verify_bundle, missing, chain.genesis, f"lacks the field '{name}'")
    ids = [t.tx_id.hex() for t in chain.blocks[1].txs]
    refused(proofs.verify_bundle, dict(doc, block_tx_ids=ids), chain.genesis, "unknown field")
    for name in proofs.ANCHOR_FIELDS:
        anchor = {k: v for k, v in doc["anchor"].items() if k != name}
        refused(proofs.verify_bundle, dict(doc, anchor=anchor), chain.genesis, "anchor lacks")
    binary_key = {**chain.bundle(2, 1), b"note": 1}
    refused(proofs.verify_bundle, binary_key, chain.genesis, "not text")
    refused(proofs.verify_bundle, dict(doc, format="cityledger-proof-bundle/1"), chain.genesis)
    refused(proofs.verify_bundle, dict(doc, format="cityledger-proof-bundle/3"), chain.genesis)


def test_the_outcome_is_proven_too(chain: Chain) -> None:
    doc = chain.bundle(2, 1)
    assert proofs.verify_bundle(doc, chain.genesis).outcome == ""
    claimed = dict(doc, outcome="over_allocation")  # a refusal the block does not record
    refused(proofs.verify_bundle, claimed, chain.genesis, "outcome_proof does not prove")
    refused(proofs.verify_bundle, dict(doc, outcome="nonsense"), chain.genesis, "reason code")
    other = chain.bundle(2, 2)
    moved = dict(doc, outcome_proof=other["outcome_proof"])
    refused(proofs.verify_bundle, moved, chain.genesis, "outcome_proof")


def test_another_genesis_refuses_the_bundle(chain: Chain) -> None:
    doc = chain.bundle(1, 0)
    elsewhere = factory.network(chain_id="elsewhere").genesis
    refused(proofs.verify_bundle, doc, elsewhere, "is for chain 'testcity', not 'elsewhere'")
    same_name = factory.network(validators=7).genesis  # same chain id, other validators
    refused(proofs.verify_bundle, doc, same_name, "genesis_hash")


# --- The tx's own rules and the certificate --------------------------------------------------


def one_block_bundle(net: factory.Network, tx: txs.Transaction, **header: int) -> dict[str, Any]:
    """Block 1 holding `tx`, certified in `cert_view` by a quorum, and its bundle."""
    cert_view = header.pop("cert_view", header.get("view", 0))
    block = make_block(
        ChainHead.genesis(net.genesis), (tx,), header.get("timestamp_ms", tx.timestamp_ms),
        header.get("view", 0), header.get("proposer", 0),
    )  # fmt: skip
    cert = net.certify(block, cert_view)
    return {
        "format": proofs.BUNDLE_FORMAT, "chain_id": net.genesis.chain_id,
        "genesis_hash": net.genesis.hash, "tx_id": tx.tx_id, "tx": tx.raw, "height": 1,
        "index": 0, "tx_count": 1, "header": encode(block.header.to_list()),
        "block_hash": block.hash, "tx_proof": [], "certificate": cert.encode(), "anchor": None,
        "outcome": "", "outcome_proof": [],
    }  # fmt: skip


def test_the_tx_rules_hold_in_the_bundle(chain: Chain) -> None:
    net, now = chain.net, factory.BASE_TIME_MS
    clerk = net.client_for("fiscal/")
    fine = net.tx(clerk, "fiscal/ok", {}, now)
    assert proofs.verify_bundle(one_block_bundle(net, fine), net.genesis).tx == fine
    ttl, skew = net.genesis.params.tx_ttl_ms, net.genesis.params.clock_skew_ms
    cases = {
        "stale_timestamp": one_block_bundle(net, fine, timestamp_ms=now + ttl + 1),
        "future_timestamp": one_block_bundle(net, net.tx(clerk, "fiscal/f", {}, now + skew + 1),
                                             timestamp_ms=now),
        "forbidden_namespace": one_block_bundle(net, net.tx(clerk, "claims/x", {}, now)),
        "unknown_client": one_block_bundle(net, factory.network(clients_per_org=2).tx(
            "fiscal-clerk1", "fiscal/x", {}, now)),
    }  # fmt: skip
    for reason, doc in cases.items():
        refused(proofs.verify_bundle, doc, net.genesis, reason)
    bad_signature = fine.raw[:-1] + bytes([fine.raw[-1] ^ 0x01])  # the signature's last byte
    doc = one_block_bundle(net, fine)
    tampered = dict(doc, tx=bad_signature, tx_id=txs.decode_tx(bad_signature).tx_id)
    refused(proofs.verify_bundle, tampered, net.genesis, "bad_signature")


def test_the_certificate_rules_hold(chain: Chain) -> None:
    net = chain.net
    tx = net.tx(net.client_for("permits/"), "permits/p", {}, factory.BASE_TIME_MS)
    assert proofs.verify_bundle(one_block_bundle(net, tx, view=1, proposer=1), net.genesis)
    assert proofs.verify_bundle(one_block_bundle(net, tx, cert_view=2), net.genesis)
    predates = one_block_bundle(net, tx, view=1, proposer=1, cert_view=0)
    refused(proofs.verify_bundle, predates, net.genesis, "predates the block's view")
    refused(proofs.verify_bundle, one_block_bundle(net, tx, proposer=1), net.genesis, "primary")
    doc = chain.bundle(2, 0)
    cert = chain.certs[1]
    for votes, reason in (
        (cert.votes[:2], "2 votes, 3 needed"),
        (cert.votes[::-1], "not sorted"),
        ((cert.votes[0], (1, cert.votes[2][1]), cert.votes[2]), "validator 1 is invalid"),
    ):
        bad = Certificate(cert.height, cert.block_hash, cert.view, votes)
        refused(proofs.verify_bundle, dict(doc, certificate=bad.encode()), chain.genesis, reason)
    foreign = factory.network(chain_id="elsewhere").certify(chain.blocks[1]).encode()
    refused(proofs.verify_bundle, dict(doc, certificate=foreign), chain.genesis, "invalid")


# --- Checkpoints -----------------------------------------------------------------------------


def test_every_checkpoint_verifies(chain: Chain) -> None:
    for height in range(1, BLOCKS + 1):
        for form in (chain.checkpoint(height), hexed(chain.checkpoint(height))):
            head = proofs.verify_checkpoint(form, chain.genesis)
            assert head.block_hash == head.header.hash() == chain.blocks[height - 1].hash
            assert head.certificate == chain.certs[height - 1]


def test_every_altered_byte_of_a_checkpoint_fails(chain: Chain) -> None:
    doc = chain.checkpoint(4)
    assert assert_every_alteration_fails(doc, proofs.verify_checkpoint, chain.genesis) > 300
    for name in proofs.CHECKPOINT_FIELDS:
        missing = {k: v for k, v in doc.items() if k != name}
        refused(proofs.verify_checkpoint, missing, chain.genesis, f"lacks the field '{name}'")
    refused(proofs.verify_checkpoint, dict(doc, history_proof=[]), chain.genesis, "unknown")
    other = chain.checkpoint(3)
    refused(proofs.verify_checkpoint, dict(doc, certificate=other["certificate"]), chain.genesis)
    refused(proofs.verify_checkpoint, dict(doc, history_root=other["history_root"]),
            chain.genesis, "history_root")  # fmt: skip
    refused(proofs.verify_checkpoint, [doc], chain.genesis, "expected an object")


# --- Consistency proofs ----------------------------------------------------------------------


def test_consistency_between_every_pair_of_heads(chain: Chain) -> None:
    for old in range(1, BLOCKS + 1):
        for new in range(old, BLOCKS + 1):
            doc = chain.consistency(old, new)
            assert proofs.verify_consistency(doc, chain.genesis) == (old, new)
            assert proofs.verify_consistency(hexed(doc), chain.genesis) == (old, new)
            if old == new:
                continue
            swapped = dict(doc, to=doc["from"], **{"from": doc["to"]})
            refused(proofs.verify_consistency, swapped, chain.genesis, "above")
            for name in ("consistency_proof", "inclusion_proof"):
                forged = dict(doc, **{name: [bytes(32), *doc[name][1:]]})
                refused(proofs.verify_consistency, forged, chain.genesis, "not a prefix")


def test_every_altered_byte_of_a_consistency_proof_fails(chain: Chain) -> None:
    for old, new in ((2, 5), (3, 3)):
        doc = chain.consistency(old, new)
        assert assert_every_alteration_fails(doc, proofs.verify_consistency, chain.genesis) > 500


def test_forks_and_padded_proofs_fail(chain: Chain) -> None:
    fork = build(chain.net)  # the same validators certify other blocks at the same heights
    assert fork.blocks[0].hash != chain.blocks[0].hash
    same = dict(chain.consistency(3, 3), to=fork.checkpoint(3))
    refused(proofs.verify_consistency, same, chain.genesis, "two different certified blocks")
    across = dict(chain.consistency(2, 5), to=fork.checkpoint(5))
    refused(proofs.verify_consistency, across, chain.genesis, "not a prefix")
    padded = dict(chain.consistency(3, 3), inclusion_proof=[bytes(32)])
    refused(proofs.verify_consistency, padded, chain.genesis, "holds no hashes")
    refused(proofs.verify_consistency, {**chain.consistency(1, 2), "note": ""}, chain.genesis)


# --- Fuzzing: only ever InvalidProof ---------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | _json.map(lambda v: json.dumps(hexed(v)).encode()))
def test_arbitrary_files_only_ever_raise_invalid_proof(data: bytes) -> None:
    genesis = factory.network().genesis
    with pytest.raises(proofs.InvalidProof):
        proofs.verify_bundle(proofs.parse(data), genesis)


@settings(max_examples=200, deadline=None)
@given(value=_json)
def test_arbitrary_values_only_ever_raise_invalid_proof(value: Any) -> None:
    genesis = factory.network().genesis
    for check in (proofs.verify_bundle, proofs.verify_checkpoint, proofs.verify_consistency):
        with pytest.raises(proofs.InvalidProof):
            check(value, genesis)


_PLACES = [("bundle", f) for f in sorted(proofs.BUNDLE_FIELDS)] + [
    ("anchor", f) for f in sorted(proofs.ANCHOR_FIELDS)
]


@settings(max_examples=400, deadline=None)
@given(place=st.sampled_from(_PLACES), value=_json)
def test_any_field_replaced_by_any_value_fails(
    chain: Chain, place: tuple[str, str], value: Any
) -> None:
    """In the map, and in its MessagePack file."""
    doc = chain.bundle(2, 1)
    holder, name = (doc, place[1]) if place[0] == "bundle" else (doc["anchor"], place[1])
    if holder[name] == value or hexed(holder[name]) == value:
        return  # the same bundle
    holder = dict(holder, **{name: value})
    altered = holder if place[0] == "bundle" else dict(doc, anchor=holder)
    if altered["anchor"] is None:
        return  # a bundle without its optional anchor: still a valid proof
    refused(proofs.verify_bundle, altered, chain.genesis)
    try:
        data = msgpack.packb(altered, use_bin_type=True)
    except OverflowError:
        return  # an integer MessagePack cannot carry
    refused(proofs.verify_bundle, proofs.parse(data), chain.genesis)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(sorted(proofs.CONSISTENCY_FIELDS | proofs.CHECKPOINT_FIELDS)),
    value=_json,
)
def test_any_part_of_a_consistency_proof_replaced_fails(
    chain: Chain, field: str, value: Any
) -> None:
    doc = chain.consistency(2, 5)
    if field in proofs.CONSISTENCY_FIELDS:
        altered = dict(doc, **{field: value})
        same = doc[field] == value or hexed(doc[field]) == value
    else:
        altered = dict(doc, to=dict(doc["to"], **{field: value}))
        same = doc["to"][field] == value or hexed(doc["to"][field]) == value
    if not same:
        refused(proofs.verify_consistency, altered, chain.genesis)
