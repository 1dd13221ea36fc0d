"""A governance test chain: blocks of `_gov/` txs run through `ledger.gov.machine` in order
against an in-memory rule state, the way a block's execution runs them.

Shared by the unit and the property tests of governance. Every refused tx is checked to have
written nothing; every block's configuration is kept, so a test can compare a replay with it.
"""

from dataclasses import dataclass, field
from typing import Any, Final

from ledger import crypto
from ledger import tx as txs
from ledger.gov import history, machine
from ledger.gov.config import Config
from ledger.kinds.base import ACCEPTED, Refused, Writes
from ledger.kinds.execute import Overlay
from tests import factory

NET: Final = factory.network(admins_per_org=2)
FINANCE: Final = "fiscal-admin0"  # City Finance Bureau (runs node0)
FINANCE_2: Final = "fiscal-admin1"
PLANNING: Final = "permits-admin0"
HARBOR: Final = "claims-admin0"
CIVIC: Final = "policies-admin0"
CLERK: Final = "fiscal-clerk0"


def key_hex(name: str) -> str:
    """The public key of a test key made from `name`, as a change body names it."""
    return crypto.public_key_bytes(factory.seeded_key(name)).hex()


def client_tx(client_id: str, key_name: str = "") -> txs.Transaction:
    """A record tx of `client_id`, signed with its genesis key, or the test key `key_name`."""
    signing_key = factory.seeded_key(key_name) if key_name else NET.client_keys[client_id]
    return txs.create(
        signing_key, chain_id=NET.genesis.chain_id, client_id=client_id, nonce=0,
        timestamp_ms=factory.BASE_TIME_MS, key="fiscal/r", type_="record", body={},
    )  # fmt: skip


def propose(signer: str, proposal_id: str, change: str, **fields: Any) -> machine.GovTx:
    body = {"change": change, **fields}
    return machine.GovTx(signer, machine.PROPOSALS + proposal_id, machine.PROPOSAL_TYPE, body)


def approve(signer: str, proposal_id: str) -> machine.GovTx:
    return machine.GovTx(signer, machine.APPROVALS + proposal_id, machine.APPROVAL_TYPE, {})


def add_client(signer: str, proposal_id: str, client_id: str, **over: Any) -> machine.GovTx:
    fields = {"id": client_id, "organisation": "City Finance Bureau", "role": "clerk",
              "public_key": key_hex(f"new/{client_id}")}  # fmt: skip
    return propose(signer, proposal_id, "add-client", **(fields | over))


@dataclass
class Book:
    genesis: Any = NET.genesis
    state: Writes = field(default_factory=dict)
    height: int = 0
    after: dict[int, Config] = field(default_factory=dict)  # the configuration after each block

    def __post_init__(self) -> None:
        self.configs = history.Configs(self.genesis)
        self.after[0] = self.configs.of_state(self.state.get)

    def block(self, *txs: machine.GovTx) -> list[str]:
        """Run `txs` as block height+1; their outcome codes ("" accepted)."""
        self.height += 1
        before = self.configs.of_state(self.state.get)
        overlay = Overlay(self.state.get)
        codes = []
        for tx in txs:
            kept = dict(overlay.writes)
            try:
                writes = machine.execute(overlay.get, tx, self.height, before, self.configs)
            except Refused as refused:
                assert overlay.writes == kept, "a refused tx writes nothing"
                codes.append(refused.code)
                continue
            overlay.update(writes)
            codes.append(ACCEPTED)
        self.state.update(overlay.writes)
        self.after[self.height] = self.configs.of_state(self.state.get)
        return codes

    def one(self, tx: machine.GovTx) -> str:
        return self.block(tx)[0]

    def skip(self, blocks: int) -> None:
        for _ in range(blocks):
            self.block()

    @property
    def config(self) -> Config:
        return self.configs.of_state(self.state.get)

    def proposal(self, proposal_id: str) -> machine.Proposal:
        found = machine.read_proposal(self.state.get, proposal_id)
        assert found is not None
        return found

    def status(self, proposal_id: str) -> str:
        expiry = self.config.members.governance.expiry_blocks
        return self.proposal(proposal_id).status(self.height, expiry)

    def enact(self, tx: machine.GovTx, *approvers: str) -> None:
        """Propose in one block, approve in the next: the change is effective after it."""
        assert self.one(tx) == ACCEPTED
        proposal_id = tx.key.removeprefix(machine.PROPOSALS)
        assert self.block(*(approve(a, proposal_id) for a in approvers)) == [ACCEPTED] * len(
            approvers
        )
        assert self.status(proposal_id) == machine.EFFECTIVE
