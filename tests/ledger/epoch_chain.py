"""A chain whose validator set and consensus parameters change by governance (epochs), each
block certified by the validators of its own epoch, and the proof bundles of its txs.

Built through a real store, for the proof verifiers: the reference (ledger/proofs.py) and the
explorer's (tests/cli/test_explorer.py). The store checks each certificate against the
configuration in force before its block (docs/protocol.md 20.8), whatever check of its own
the store makes (a store that checks per epoch itself passes the same set).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import block as blocks
from ledger import crypto
from ledger import store as store_mod
from ledger import tx as txs
from ledger.gov import epochs, history
from ledger.kinds.base import ACCEPTED
from ledger.kinds.execute import execute
from ledger.store import BlockStore
from node import proofs as node_proofs
from tests import factory
from tests.gov_book import key_hex
from tests.ledger.test_gov_chain import FINANCE_ORG, NET, T0, _approve, _propose, _record

FINANCE: Final = "fiscal-admin0"
PLANNING: Final = "permits-admin0"
HARBOR: Final = "claims-admin0"
HARBOR_ORG: Final = "Harbor Mutual Insurance"
NEW_CLERK: Final = "clerk-new"
VIEW_EVERY: Final = 3  # every third block is certified in view 1 (a later primary)


def validator_key(name: str) -> Ed25519PrivateKey:
    return factory.seeded_key(f"epoch-chain/{name}")


class EpochChain:
    """Blocks on a store, each certified by a quorum of its epoch's validators."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.keys = {
            v.id: k for v, k in zip(NET.genesis.validators, NET.validator_keys, strict=True)
        }

    def config(self) -> Any:
        """The configuration in force before the next block."""
        return history.configs_for(NET.genesis).of_state(self.store.rule_state)

    def block(self, *body: txs.Transaction) -> tuple[str, ...]:
        head = self.store.head
        height = head.height + 1
        members = self.config().members
        time_ms = T0 + 1000 * height
        outcomes = execute(self.store.rule_state, body, NET.genesis, time_ms, height).outcomes
        view = 1 if height % VIEW_EVERY == 0 else 0
        block = blocks.make_block(head, body, time_ms, view, view % len(members.validators),
                                  outcomes)  # fmt: skip
        payload = blocks.commit_payload(NET.genesis.chain_id, view, height, block.hash)
        signers = members.validators[-members.quorums.commit :]  # the last ones: indices move
        votes = tuple(
            (v.index, crypto.sign(self.keys[v.id], crypto.Domain.COMMIT, payload)) for v in signers
        )
        self.store.append(block, blocks.Certificate(height, block.hash, view, votes))
        return outcomes

    def enact(self, pid: str, approvers: tuple[str, ...], **change: Any) -> int:
        """Propose, then approve in the next block; the height that made it effective."""
        assert self.block(_propose(FINANCE, pid, **change)) == (ACCEPTED,)
        outcomes = self.block(*(_approve(a, pid) for a in approvers))
        assert outcomes == (ACCEPTED,) * len(approvers), outcomes
        return self.store.height

    def validator_change(self, pid: str, change: str, validator_id: str, **fields: Any) -> int:
        key = validator_key(f"{validator_id}/{pid}")
        raw = crypto.public_key_bytes(key).hex()
        proof = epochs.sign_possession(key, NET.genesis.chain_id, validator_id)
        if change == "remove-validator":
            return self.enact(pid, (PLANNING, HARBOR), change=change, id=validator_id)
        effective = self.enact(pid, (PLANNING, HARBOR), change=change, id=validator_id,
                               public_key=raw, proof=proof, **fields)  # fmt: skip
        self.keys[validator_id] = key  # it signs from the next block on
        return effective

    def bundle(self, tx: txs.Transaction) -> dict[str, Any]:
        doc = node_proofs.bundle(self.store, tx.tx_id)
        assert doc is not None
        return doc


def build(chain: EpochChain) -> dict[str, txs.Transaction]:
    """Four epochs: a validator added, a key rotated, one removed (the indices after it move),
    the consensus parameters changed; a clerk added and its key rotated between them. The txs
    whose bundles the verifiers compare, by name."""
    made = {"early": _record("fiscal-clerk0", "fiscal/early")}
    chain.block(made["early"])
    chain.validator_change("p1", "add-validator", "node9", organisation=HARBOR_ORG,
                           kind="insurer", url="https://node9.example:7009")  # fmt: skip
    made["epoch1"] = _record("permits-clerk0", "permits/epoch1")
    chain.block(made["epoch1"])
    chain.enact(
        "p2",
        (PLANNING, HARBOR),
        change="add-client",
        id=NEW_CLERK,
        organisation=FINANCE_ORG,
        role="clerk",
        public_key=key_hex(f"new/{NEW_CLERK}"),
    )
    made["added"] = _record(NEW_CLERK, "fiscal/by-new", key_name=f"new/{NEW_CLERK}")
    chain.block(made["added"])
    chain.validator_change("p3", "rotate-validator-key", "node1", url="https://n1.example:1")
    chain.validator_change("p4", "remove-validator", "node2")  # node3 and node9 move down
    made["epoch3"] = _record("claims-clerk0", "claims/epoch3")
    chain.block(made["epoch3"])
    chain.enact(
        "p5",
        (PLANNING, HARBOR),
        change="set-params",
        params={"consensus.clock_skew_ms": 45000, "governance.expiry_blocks": 50},
    )
    stale = _record(NEW_CLERK, "fiscal/stale", key_name=f"new/{NEW_CLERK}")
    chain.enact(
        "p6",
        (PLANNING, HARBOR),
        change="rotate-client-key",
        id=NEW_CLERK,
        public_key=key_hex("epoch-chain/rotated"),
    )
    made["rotated"] = _record(NEW_CLERK, "fiscal/rotated", key_name="epoch-chain/rotated")
    made["stale"] = stale
    chain.block(made["rotated"], stale)
    chain.block(_record("policies-clerk0", "policies/last"))
    assert chain.config().epoch == 4
    return made


@contextmanager
def epoch_chain(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EpochChain]:
    """An open `EpochChain` in `path`."""
    with BlockStore.open(path, NET.genesis) as store:
        chain = EpochChain(store)

        def per_epoch(cert: blocks.Certificate, block: blocks.Block, _genesis: Any) -> None:
            configs = history.configs_for(NET.genesis)
            members = configs.of_block(store.rule_state, block.height).members
            blocks.verify_certificate(cert, block, members)

        monkeypatch.setattr(store_mod, "verify_certificate", per_epoch)
        yield chain
