"""The block view and `GET /v1/votes` name validators by the set of each block's epoch
(docs/protocol.md 19.6, 19.8, 20.8): on a chain whose set governance changed (a validator
added, a key rotated, one removed so the indices after it move; tests/ledger/epoch_chain.py),
each certificate is checked against, and its signers named by, its own epoch's set; a vote
is verified with the key its sender held at that height; view changes count per validator id.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus import messages as m
from ledger import crypto
from ledger.block import commit_payload
from ledger.errors import StoreError
from node import blockview, votes
from tests.ledger.epoch_chain import NET, EpochChain, build, epoch_chain

FIRST_SET = ["node0", "node1", "node2", "node3"]
ADDED_SET = [*FIRST_SET, "node9"]  # epochs 1 and 2 (in 2 with node1's key rotated)
LAST_SET = ["node0", "node1", "node3", "node9"]  # node2 removed: node3 and node9 moved down


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EpochChain]:
    with epoch_chain(tmp_path / "data", monkeypatch) as opened:
        build(opened)
        yield opened


def ids_of(chain: EpochChain, height: int) -> list[str]:
    return [v.id for v in blockview.certifiers(chain.store, height).members.validators]


def test_the_block_view_names_signers_by_the_set_of_its_epoch(chain: EpochChain) -> None:
    store = chain.store
    epochs = {h: blockview.certifiers(store, h).epoch for h in range(1, store.height + 1)}
    assert (epochs[3], epochs[4], epochs[12], epochs[store.height]) == (0, 1, 3, 4)
    for height, expected in ((1, FIRST_SET), (4, ADDED_SET), (12, LAST_SET)):
        assert ids_of(chain, height) == expected
        view = blockview.block_view(store, height)
        assert view is not None
        quorum = len(blockview.certifiers(store, height).members.validators)
        signers = view["certificate"]["signers"]
        assert signers == expected[-len(signers) :], height  # the epoch chain's last ones
        assert len(signers) < quorum + 1
        assert view["epoch"] == epochs[height]
        assert view["proposer_id"] == expected[view["header"]["view"] % len(expected)]
    assert blockview.block_view(store, store.height + 1) is None


def test_a_certificate_checked_against_another_epochs_set_is_refused(
    chain: EpochChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the view did before: the genesis's set for a block of epoch 3 is a damaged store."""
    genesis_set = blockview.certifiers(chain.store, 1)
    monkeypatch.setattr(blockview, "certifiers", lambda _store, _height: genesis_set)
    with pytest.raises(StoreError, match="stored block 12 is damaged"):
        blockview.block_view(chain.store, 12)


def _commit(chain: EpochChain, signer: str, sender: int, height: int) -> m.Commit:
    cert = chain.store.certificate(height)
    assert cert is not None
    payload = commit_payload(NET.genesis.chain_id, cert.view, height, cert.block_hash)
    signature = crypto.sign(chain.keys[signer], crypto.Domain.COMMIT, payload)
    return m.Commit(cert.view, height, cert.block_hash, sender, signature)


def test_votes_are_checked_and_named_by_the_set_of_their_height(chain: EpochChain) -> None:
    store = chain.store
    head = [8]  # the node started at height 8: it saw the heights after it live
    log = votes.VoteLog(NET.genesis, 0, lambda: head[0],
                        lambda h: blockview.certifiers(store, h).members)  # fmt: skip
    head[0] = store.height
    log.saw(_commit(chain, "node0", 0, 11))  # epoch 2: a vote the certificate did not keep
    # Epoch 3: index 2 is node3 now; a vote of node2 (removed) under its old index is no one's
    # (the genesis's set would have counted it as node2's).
    log.saw(_commit(chain, "node2", 2, 12))
    log.saw(_commit(chain, "node9", 3, 12))  # node9 is index 3 in epoch 3
    log.saw(m.ViewChange(5, 0, b"\x00" * 32, None, (), 3))  # index 3 of the epoch in progress
    page = log.page(store, 9, 13)
    rows = {r["height"]: r for r in page["heights"]}
    assert rows[11]["signers"] == ADDED_SET[1:]
    assert rows[11]["voters"] == ADDED_SET  # node0's vote seen live, not kept
    assert rows[12]["signers"] == rows[12]["voters"] == LAST_SET[1:]
    assert [h for h, r in rows.items() if r["seen"]] == [11, 12]
    by_id = {v["id"]: v for v in page["validators"]}
    assert [v["id"] for v in page["validators"]] == [*LAST_SET, "node2"]  # node2 left
    assert (by_id["node9"]["index"], by_id["node2"]["index"]) == (3, 2)
    assert by_id["node2"]["heights"] == 3  # blocks 9-11, before its removal took effect
    assert by_id["node9"]["heights"] == 5
    assert (by_id["node0"]["missed"], by_id["node0"]["not_kept"]) == (1, 1)
    assert (by_id["node2"]["missed"], by_id["node2"]["last_vote"]) == (0, 11)
    assert by_id["node9"]["view_changes"] == 1
    assert by_id["node3"]["view_changes"] == 0


def test_view_changes_count_for_a_bounded_number_of_ids(chain: EpochChain) -> None:
    store = chain.store
    log = votes.VoteLog(NET.genesis, 0, lambda: store.height,
                        lambda h: blockview.certifiers(store, h).members)  # fmt: skip
    for n in range(votes.VIEW_CHANGE_IDS_MAX + 8):
        log._view_changes(f"gone-{n}").count += 1
    assert len(log._views) == votes.VIEW_CHANGE_IDS_MAX
    assert "gone-0" not in log._views
