"""Proof bundles across epochs (docs/protocol.md 14.5, 20.8): a tx of a later epoch is proven
against the genesis alone, its block's certificate checked against the validator set of its
epoch (a validator added, a key rotated, one removed so the indices after it move), the
consensus parameters of its epoch applied; without the governance that made the set, the
certificate does not verify."""

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import proofs
from ledger.gov import codes
from tests.ledger.epoch_chain import NET, EpochChain, build, epoch_chain
from tests.ledger.test_proofs import alterations, hexed

ALTERATIONS = 200
SEED = 20


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EpochChain]:
    with epoch_chain(tmp_path / "data", monkeypatch) as opened:
        yield opened


def test_txs_of_every_epoch_are_proven_with_the_genesis_alone(chain: EpochChain) -> None:
    made = build(chain)
    outcomes = {"stale": codes.KEY_ROTATED}
    for name, tx in made.items():
        doc = chain.bundle(tx)
        assert doc["format"] == proofs.BUNDLE_FORMAT_GOVERNANCE, name
        proven = proofs.verify_bundle(doc, NET.genesis)
        assert proven.outcome == outcomes.get(name, ""), name
        assert proven.anchor is not None
        assert proven.changes == 6  # every change below the anchor, the head
    # The head's certificate is made by the last set: node3 and node9 moved to indices 2, 3.
    head = proofs.verify_bundle(chain.bundle(made["rotated"]), NET.genesis).anchor
    assert head is not None
    assert [v.id for v in head.members.validators] == ["node0", "node1", "node3", "node9"]


def test_without_a_validator_change_the_later_certificates_fail(chain: EpochChain) -> None:
    doc = chain.bundle(build(chain)["epoch3"])
    heights = [b["height"] for b in doc["governance"]]
    assert heights == [2, 3, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]
    # The removal's approval left out: block 12 is checked against a set of five it was not
    # certified by.
    short = dict(doc, governance=[b for b in doc["governance"] if b["height"] != 11])
    with pytest.raises(proofs.InvalidProof, match="certificate"):
        proofs.verify_bundle(short, NET.genesis)


def test_altered_bytes_of_an_epoch_bundle_fail(chain: EpochChain) -> None:
    """A sample of the one-byte changes (every change of twelve governance blocks takes
    minutes; tests/ledger/test_proofs_gov.py tries every one on a smaller bundle)."""
    doc = hexed(chain.bundle(build(chain)["added"]))
    every = list(alterations(doc))
    for where, altered in random.Random(SEED).sample(every, ALTERATIONS):
        with pytest.raises(proofs.InvalidProof):
            proofs.verify_bundle(altered, NET.genesis)
        assert where
