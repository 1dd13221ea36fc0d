"""View change rules: which ViewChanges are valid, and what a NewView must re-propose."""

import pytest

from consensus import messages as m
from consensus.epoch import Epoch
from consensus.viewchange import check_view_change, linked, select
from ledger import block as blocks
from ledger import crypto
from tests import factory

NET = factory.network(4)
G = NET.genesis
E0 = Epoch.of_genesis(G)
WINDOW = 8
CHAIN = list(factory.chain(NET, 4, 1))  # certified blocks 1..4


def proof(block: blocks.Block, view: int, signers: range = range(3)) -> m.PreparedProof:
    votes = tuple(
        (i, crypto.sign(NET.validator_keys[i], crypto.Domain.PEER,
                        m.prepare_payload(G.chain_id, i, view, block.height, block.hash)))
        for i in signers
    )  # fmt: skip
    return m.PreparedProof(view, block.height, block.hash, votes)


def vc(
    sender: int, committed: int, prepared: tuple[m.PreparedProof, ...] = (), new_view: int = 5
) -> m.ViewChange:
    if committed == 0:
        return m.ViewChange(new_view, 0, G.hash, None, prepared, sender)
    block, cert = CHAIN[committed - 1]
    return m.ViewChange(new_view, committed, block.hash, cert, prepared, sender)


def fork_at(height: int, view: int) -> blocks.Block:
    """Another block than the chain's at `height`, on the same parent."""
    head = blocks.ChainHead.genesis(G)
    for block, _ in CHAIN[: height - 1]:
        head = head.advance(block)
    tx = NET.tx("fiscal-clerk0", "fiscal/fork", {"v": view}, factory.BASE_TIME_MS)
    return blocks.make_block(head, (tx,), factory.BASE_TIME_MS + height * 1000, view, view % 4)


def test_base_is_the_highest_certified_head() -> None:
    selection = select([vc(0, 1), vc(1, 3), vc(2, 2)], WINDOW)
    assert (selection.base_height, selection.base_sender) == (3, 1)
    assert selection.base_hash == CHAIN[2][0].hash
    assert selection.hashes == ()


def test_each_height_takes_the_prepared_block_of_the_highest_view() -> None:
    b2, b3 = CHAIN[1][0], CHAIN[2][0]
    old = fork_at(2, 0)
    views = [vc(0, 1, (proof(old, 0),)), vc(1, 1, (proof(b2, 2), proof(b3, 2))), vc(2, 1)]
    chosen = select(views, WINDOW)
    assert chosen.hashes == (b2.hash, b3.hash)
    # Who holds each block: the senders whose proof names it, then the signers of its Prepares.
    assert chosen.holders == ((1, 0, 2), (1, 0, 2))


def test_selection_stops_at_a_gap_and_the_blocks_at_one_that_does_not_link() -> None:
    b2, b4 = CHAIN[1][0], CHAIN[3][0]
    gap = select([vc(0, 1, (proof(b2, 1), proof(b4, 1))), vc(1, 1), vc(2, 1)], WINDOW)
    assert gap.hashes == (b2.hash,)
    stale = fork_at(2, 0)
    b3 = CHAIN[2][0]  # extends the chain's block 2, not `stale`
    chosen = select([vc(0, 1, (proof(stale, 3), proof(b3, 1))), vc(1, 1), vc(2, 1)], WINDOW)
    assert chosen.hashes == (stale.hash, b3.hash)  # by hash, the rule cannot see the break
    assert linked(CHAIN[0][0].hash, [stale, b3]) == (stale,)  # with the blocks, it can
    assert linked(CHAIN[0][0].hash, [CHAIN[1][0], b3]) == (CHAIN[1][0], b3)


def test_valid_view_changes_pass() -> None:
    check_view_change(vc(0, 0), E0, WINDOW)
    check_view_change(vc(1, 2, (proof(CHAIN[2][0], 4),)), E0, WINDOW)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (m.ViewChange(5, 2, CHAIN[1][0].hash, None, (), 0), "needs its certificate"),
        (m.ViewChange(5, 2, CHAIN[2][0].hash, CHAIN[1][1], (), 0), "does not match"),
        (vc(0, 1, (proof(CHAIN[1][0], 5),)), "not yet left"),
        (vc(0, 1, (proof(CHAIN[1][0], 1, range(2)),)), "quorum"),
        (vc(0, 1, (proof(CHAIN[2][0], 1), proof(CHAIN[1][0], 1))), "increasing"),
        (vc(0, 2, (proof(CHAIN[0][0], 1),)), "window"),
    ],
)
def test_invalid_view_changes_are_rejected(bad: m.ViewChange, reason: str) -> None:
    with pytest.raises(m.InvalidMessage, match=reason):
        check_view_change(bad, E0, WINDOW)


def test_forged_certificate_and_prepare_signatures_are_rejected() -> None:
    block, cert = CHAIN[1]
    forged_cert = blocks.Certificate(cert.height, cert.block_hash, cert.view,
                                     ((0, bytes(64)), *cert.votes[1:]))  # fmt: skip
    with pytest.raises(m.InvalidMessage, match="signature"):
        check_view_change(
            m.ViewChange(5, 2, block.hash, forged_cert, (), 0), Epoch.of_genesis(G), WINDOW
        )
    good = proof(CHAIN[2][0], 1)
    forged = m.PreparedProof(1, 3, good.block_hash, ((0, bytes(64)), *good.prepares[1:]))
    with pytest.raises(m.InvalidMessage, match="signature"):
        check_view_change(vc(0, 2, (forged,)), E0, WINDOW)
