"""Governance in certified blocks, through the store and the verifier: a clerk added by
proposal and approvals commits from the next block, a revoked clerk's tx is recorded
`revoked`, a tx signed with a key rotated out is recorded `key_rotated` (a block may hold
what was admitted before the change), one signed by no key the signer ever held makes its
block invalid, and `verify_chain` replays all of it from genesis."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from ledger import block as blocks
from ledger import tx as txs
from ledger.errors import InvalidBlock
from ledger.gov import codes
from ledger.gov.history import config_of
from ledger.kinds.base import ACCEPTED
from ledger.kinds.execute import execute
from ledger.store import BlockStore
from ledger.verify import ChainVerifier, verify_chain
from tests import factory
from tests.gov_book import FINANCE, HARBOR, PLANNING, key_hex

NET: Final = factory.network(admins_per_org=1)
T0: Final = factory.BASE_TIME_MS
FINANCE_ORG: Final = "City Finance Bureau"


def _signed(signer: str, key: str, type_: str, body: dict[str, Any], key_name: str = "") -> Any:
    if key_name:
        return txs.create(
            factory.seeded_key(key_name), chain_id=NET.genesis.chain_id, client_id=signer,
            nonce=len(key) + len(key_name), timestamp_ms=T0, key=key, type_=type_, body=body,
        )  # fmt: skip
    return NET.tx(signer, key, body, T0, type_)


def _propose(signer: str, pid: str, **change: Any) -> txs.Transaction:
    return _signed(signer, f"_gov/proposals/{pid}", "gov.proposal", change)


def _approve(signer: str, pid: str) -> txs.Transaction:
    return _signed(signer, f"_gov/approvals/{pid}", "gov.approval", {})


def _record(client: str, key: str, key_name: str = "") -> txs.Transaction:
    return _signed(client, key, "record", {"n": len(key)}, key_name)


class Chain:
    def __init__(self, store: BlockStore) -> None:
        self.store = store

    def block(self, *body: txs.Transaction) -> tuple[str, ...]:
        head = self.store.head
        time_ms = T0 + 1000 * (head.height + 1)
        outcomes = execute(
            self.store.rule_state, body, NET.genesis, time_ms, head.height + 1
        ).outcomes
        block = blocks.make_block(head, body, time_ms, 0, 0, outcomes)
        self.store.append(block, NET.certify(block))
        return outcomes

    def refuses(self, tx: txs.Transaction, match: str) -> None:
        """A block holding `tx` is invalid whatever its outcome says (the rules that consensus
        and a verifier run: a certified block's store checks no signatures again)."""
        head = self.store.head
        for code in ("", codes.REVOKED):
            block = blocks.make_block(head, (tx,), T0 + 1000 * (head.height + 1), 0, 0, (code,))
            with pytest.raises(InvalidBlock, match=match):
                blocks.check_block(
                    block, head, NET.genesis, is_committed=lambda _: False,
                    state=self.store.rule_state,
                )  # fmt: skip


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with BlockStore.open(tmp_path / "data", NET.genesis) as store:
        yield Chain(store)


def _enact(chain: Chain, pid: str, **change: Any) -> None:
    assert chain.block(_propose(FINANCE, pid, **change)) == (ACCEPTED,)
    assert chain.block(_approve(PLANNING, pid), _approve(HARBOR, pid)) == (ACCEPTED, ACCEPTED)


def test_a_clerk_added_revoked_and_a_key_rotated_in_blocks(chain: Chain) -> None:
    store = chain.store
    new_clerk = _record("clerk-new", "fiscal/by-new", key_name="new/clerk-new")
    chain.refuses(new_clerk, "unknown_client")  # not in force yet: no block may hold its tx
    _enact(chain, "p1", change="add-client", id="clerk-new", organisation=FINANCE_ORG,
           role="clerk", public_key=key_hex("new/clerk-new"))  # fmt: skip
    assert chain.block(new_clerk) == (ACCEPTED,)
    assert store.latest_record("fiscal/by-new") is not None

    pending = _record("clerk-new", "fiscal/pending", key_name="new/clerk-new")  # admitted
    _enact(chain, "p2", change="revoke-client", id="clerk-new")
    assert chain.block(pending) == (codes.REVOKED,)  # recorded, refused
    assert store.tx_outcome(pending.tx_id) == codes.REVOKED

    clerk = "fiscal-clerk0"
    old_key_tx = _record(clerk, "fiscal/old-key")  # admitted before the rotation
    _enact(chain, "p3", change="rotate-client-key", id=clerk, public_key=key_hex("rotated"))
    assert chain.block(old_key_tx, _record(clerk, "fiscal/new-key", key_name="rotated")) == (
        codes.KEY_ROTATED, ACCEPTED,
    )  # fmt: skip
    config = config_of(store.rule_state, NET.genesis)
    assert (config.version, config.since) == (3, 8)  # made by the approvals of block 8
    assert verify_chain(store, NET.genesis).ok


def test_a_block_holding_a_forged_tx_of_a_revoked_client_is_invalid(chain: Chain) -> None:
    _enact(chain, "p1", change="revoke-client", id="fiscal-clerk0")
    forged = _record("fiscal-clerk0", "fiscal/forged", key_name="someone-else")
    chain.refuses(forged, "bad_signature")


def test_admins_write_only_governance_and_clients_never_do(chain: Chain) -> None:
    chain.refuses(_record(FINANCE, "fiscal/by-an-admin"), "forbidden_namespace")
    clerk_proposal = _signed("fiscal-clerk0", "_gov/proposals/p9", "gov.proposal", {})
    chain.refuses(clerk_proposal, "forbidden_namespace")
    chain.refuses(_record("node0", "fiscal/by-a-validator", key_name="v"), "unknown_client")


def _replayed(chain: Chain) -> ChainVerifier:
    """A stream verifier fed every block of the chain so far, from genesis."""
    store = chain.store
    verifier = ChainVerifier(NET.genesis, store.tx_location)
    for height in range(1, store.height + 1):
        raw_block, raw_cert = store.raw_block(height), store.raw_certificate(height)
        assert raw_block is not None
        assert raw_cert is not None
        verifier.feed(raw_block, raw_cert)
    return verifier


@pytest.mark.parametrize(
    ("change", "signing_key", "reason"),
    [
        ({"change": "revoke-client", "id": "fiscal-clerk0"}, "", "revoked"),
        (
            {"change": "rotate-client-key", "id": "fiscal-clerk0", "public_key": key_hex("r2")},
            "",
            "key_rotated",
        ),
        ({"change": "revoke-client", "id": "fiscal-clerk0"}, "someone-else", "bad_signature"),
    ],
)
def test_verify_refuses_a_tx_of_a_retired_key_accepted_after_the_change_at_its_height(
    chain: Chain, change: dict[str, Any], signing_key: str, reason: str
) -> None:
    """The clerk's tx, signed with its genesis key, is accepted before the change; once the
    change is effective, a certified block (a faulty quorum's) that accepts such a tx is
    refused by the verifier at exactly its height, with the configuration's reason, and the
    verifier's head stays at the block before."""
    clerk = "fiscal-clerk0"
    late = _record(clerk, "fiscal/after", key_name=signing_key)
    if not signing_key:  # the same bytes verify before the change
        assert chain.block(_record(clerk, "fiscal/before")) == (ACCEPTED,)
    _enact(chain, "p1", **change)
    verifier = _replayed(chain)
    assert verify_chain(chain.store, NET.genesis).ok
    head = chain.store.head
    forged = blocks.make_block(head, (late,), T0 + 1000 * (head.height + 1), 0, 0, (ACCEPTED,))
    with pytest.raises(InvalidBlock, match=f"block {head.height + 1} .*{reason}"):
        verifier.feed(forged.encode(), NET.certify(forged).encode())
    assert verifier.head.height == head.height
