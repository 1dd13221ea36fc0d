"""Proof bundles across configuration changes (docs/protocol.md 14.5): a tx of a clerk that
governance added, or signed with a key it rotated in, proven against the genesis alone.

The node's bundle (node/proofs.py) carries every effective change below its highest block:
each change's proposal and approvals, with their blocks' headers and certificates. The
verifier replays them with ledger/gov's rules; every altered byte of the bundle, and every
governance tx left out, is refused.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgpack
import pytest

from ledger import proofs
from ledger import tx as txs
from ledger.gov import codes
from ledger.kinds.base import ACCEPTED
from ledger.store import BlockStore
from node import proofs as node_proofs
from tests.gov_book import key_hex
from tests.ledger.test_gov_chain import FINANCE_ORG, NET, Chain, _enact, _record
from tests.ledger.test_proofs import assert_every_alteration_fails, hexed

NEW: Final = "clerk-new"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with BlockStore.open(tmp_path / "data", NET.genesis) as store:
        yield Chain(store)


def _bundle(chain: Chain, tx: txs.Transaction) -> dict[str, Any]:
    doc = node_proofs.bundle(chain.store, tx.tx_id)
    assert doc is not None
    return doc


def _added(chain: Chain) -> tuple[txs.Transaction, txs.Transaction]:
    """Blocks 1-4: a genesis clerk's tx; a clerk added (blocks 2-3) who writes (4)."""
    early = _record("fiscal-clerk0", "fiscal/early")
    assert chain.block(early) == (ACCEPTED,)
    _enact(chain, "p1", change="add-client", id=NEW, organisation=FINANCE_ORG, role="clerk",
           public_key=key_hex(f"new/{NEW}"))  # fmt: skip
    added = _record(NEW, "fiscal/by-new", key_name=f"new/{NEW}")
    assert chain.block(added) == (ACCEPTED,)
    return early, added


def _governed(chain: Chain) -> dict[str, txs.Transaction]:
    """`_added`, then the new clerk's key rotated (blocks 5-6); a tx of the new key and one of
    the old key admitted before (7); one more block (8)."""
    early, added = _added(chain)
    stale = _record(NEW, "fiscal/stale", key_name=f"new/{NEW}")  # admitted before the rotation
    _enact(chain, "p2", change="rotate-client-key", id=NEW, public_key=key_hex("rotated"))
    rotated = _record(NEW, "fiscal/rotated", key_name="rotated")
    assert chain.block(rotated, stale) == (ACCEPTED, codes.KEY_ROTATED)
    chain.block(_record("permits-clerk0", "permits/last"))
    return {"early": early, "added": added, "rotated": rotated, "stale": stale}


def test_a_governance_added_clerks_tx_is_proven_with_the_genesis_alone(chain: Chain) -> None:
    made = _governed(chain)
    doc = _bundle(chain, made["added"])
    assert doc["format"] == proofs.BUNDLE_FORMAT_GOVERNANCE
    assert [b["height"] for b in doc["governance"]] == [2, 3, 5, 6]
    assert [len(b["txs"]) for b in doc["governance"]] == [1, 2, 1, 2]
    for form in (doc, hexed(doc), proofs.parse(msgpack.packb(doc, use_bin_type=True))):
        proven = proofs.verify_bundle(form, NET.genesis)
        assert (proven.block.header.height, proven.outcome, proven.changes) == (4, ACCEPTED, 2)
        assert proven.anchor is not None
        assert proven.anchor.header.height == 8
    for name, outcome in (("rotated", ACCEPTED), ("stale", codes.KEY_ROTATED), ("early", "")):
        proven = proofs.verify_bundle(_bundle(chain, made[name]), NET.genesis)
        assert proven.outcome == outcome


def test_without_its_governance_the_bundle_does_not_verify(chain: Chain) -> None:
    doc = _bundle(chain, _governed(chain)["added"])
    bare = {k: v for k, v in doc.items() if k != "governance"} | {"format": proofs.BUNDLE_FORMAT}
    with pytest.raises(proofs.InvalidProof, match="unknown_client"):
        proofs.verify_bundle(bare, NET.genesis)
    # The approval that made the clerk's addition effective, left out: the clerk is unknown.
    short = dict(doc, governance=[doc["governance"][0], *doc["governance"][2:]])
    with pytest.raises(proofs.InvalidProof, match="unknown_client"):
        proofs.verify_bundle(short, NET.genesis)
    # One approval of two left out: the rotation is not effective, the new key signs nothing.
    rotated = _bundle(chain, _governed_again(chain))
    step = rotated["governance"][3]
    fewer = dict(rotated, governance=[*rotated["governance"][:3], dict(step, txs=step["txs"][1:])])
    with pytest.raises(proofs.InvalidProof, match="bad_signature"):
        proofs.verify_bundle(fewer, NET.genesis)
    # Governance at or above the highest block proven is no part of a bundle.
    late = dict(doc, anchor=None, governance=doc["governance"])
    with pytest.raises(proofs.InvalidProof):
        proofs.verify_bundle(late, NET.genesis)


def _governed_again(chain: Chain) -> txs.Transaction:
    """A tx of the rotated key, for the chain `_governed` already built."""
    located = chain.store.latest_record("fiscal/rotated")
    assert located is not None
    return located[2]


def test_a_chain_without_governance_keeps_writing_version_2(chain: Chain) -> None:
    tx = _record("fiscal-clerk0", "fiscal/plain")
    chain.block(tx)
    chain.block(_record("permits-clerk0", "permits/plain"))
    doc = _bundle(chain, tx)
    assert doc["format"] == proofs.BUNDLE_FORMAT
    assert "governance" not in doc
    assert proofs.verify_bundle(doc, NET.genesis).changes == 0
    with pytest.raises(proofs.InvalidProof, match="unknown field 'governance'"):
        proofs.verify_bundle(dict(doc, governance=[]), NET.genesis)


def test_every_altered_byte_of_a_bundle_with_governance_fails(chain: Chain) -> None:
    doc = _bundle(chain, _added(chain)[1])  # the head's: no anchor, two governance blocks
    assert len(doc["governance"]) == 2
    assert assert_every_alteration_fails(doc, proofs.verify_bundle, NET.genesis) > 2000


def test_every_flipped_byte_of_a_bundle_file_with_governance_fails(chain: Chain) -> None:
    data = msgpack.packb(_bundle(chain, _added(chain)[1]), use_bin_type=True)
    proofs.verify_bundle(proofs.parse(data), NET.genesis)
    for i in range(len(data)):
        altered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        with pytest.raises(proofs.InvalidProof):
            proofs.verify_bundle(proofs.parse(altered), NET.genesis)


def test_the_limits_of_governance_in_a_bundle(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node refuses to build a bundle whose governance passes the limits (the route answers
    422 too_large); a verifier refuses one that carries more."""
    added = _added(chain)[1]
    doc = _bundle(chain, added)  # two governance blocks, three txs
    monkeypatch.setattr(proofs, "GOVERNANCE_TXS_MAX", 2)
    with pytest.raises(proofs.InvalidProof, match="more than 2 txs"):
        proofs.verify_bundle(doc, NET.genesis)
    monkeypatch.setattr(proofs, "GOVERNANCE_BLOCKS_MAX", 1)
    with pytest.raises(proofs.InvalidProof, match="at most 1 blocks"):
        proofs.verify_bundle(doc, NET.genesis)
    monkeypatch.setattr(node_proofs, "GOVERNANCE_BLOCKS_MAX", 1)
    with pytest.raises(node_proofs.TooMuchGovernance, match="verify the chain"):
        node_proofs.bundle(chain.store, added.tx_id)


def test_a_genesis_clerks_tx_needs_no_governance(chain: Chain) -> None:
    """After governance changed only clients, a genesis clerk's tx is proven by a version 2
    bundle, which older verifiers read too; a governance-added clerk's needs version 3."""
    made = _governed(chain)
    early = _bundle(chain, made["early"])
    assert early["format"] == proofs.BUNDLE_FORMAT
    assert "governance" not in early
    assert proofs.verify_bundle(early, NET.genesis).outcome == ACCEPTED
    assert _bundle(chain, made["added"])["format"] == proofs.BUNDLE_FORMAT_GOVERNANCE
