"""Governance txs in block order: proposals, approvals, expiry and effects.

Two record forms live in the reserved namespace `_gov/`, signed by admins only:

    key _gov/proposals/<id>   type gov.proposal   body: the change (ledger/gov/changes.py)
    key _gov/approvals/<id>   type gov.approval   body: {} (each approval a new version)

Rules, in this order, each refusing with its code and changing nothing (ledger/gov/codes.py):
the signer is an admin in the configuration `before` the block (`not_admin`) of an
organisation that runs a validator (`not_voter`); the key and type are one of the two forms
(`schema`); a proposal parses (`schema`, `not_in_force`), a new validator key in it proves
its possession (`bad_proof`), its id is new
(`duplicate_proposal`), no pending proposal has its subject (`conflict`) and it applies to
the configuration in force (`conflict`); an approval names a proposal (`unknown_proposal`)
that is not effective yet (`not_pending`) nor past its expiry (`expired`), from an organisation
that has not approved it (`already_approved`: the proposer's organisation approves by
proposing). When the approving organisations that still vote reach the quorum, the change is
applied to the configuration as this block has left it so far; if it no longer fits, or it
ends an epoch in a block that already ended one, the approval is refused (`conflict`) and the
proposal stays pending until it expires.

Signer checks use the configuration before the block, the fit of a change the configuration
with the block's earlier effects in: a change made by block h is in force from block h+1.
A proposal made at height p may be approved up to height p + expiry_blocks; past it, it is
expired (a status derived from the height: no tx expires it).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ledger.genesis import GOV_NAMESPACE, is_identifier
from ledger.gov import changes, history
from ledger.gov.codes import (
    ALREADY_APPROVED,
    CONFLICT,
    DUPLICATE_PROPOSAL,
    EXPIRED,
    NOT_ADMIN,
    NOT_PENDING,
    NOT_VOTER,
    UNKNOWN_PROPOSAL,
)
from ledger.gov.config import Config
from ledger.kinds.base import SCHEMA, Writes, require, state_key

PROPOSALS: Final = GOV_NAMESPACE + "proposals/"
APPROVALS: Final = GOV_NAMESPACE + "approvals/"
PROPOSAL_TYPE: Final = "gov.proposal"
APPROVAL_TYPE: Final = "gov.approval"
PENDING: Final = "pending"
EFFECTIVE: Final = "effective"
EXPIRED_STATUS: Final = "expired"


@dataclass(frozen=True)
class GovTx:
    """What the rules read of a governance tx."""

    signer: str
    key: str
    type: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Proposal:
    """A proposal as the rule state keeps it (`g "proposal" <id>`)."""

    id: str
    change: dict[str, Any]  # the canonical body
    proposer: str
    organisation: str
    height: int  # of the block that holds it
    approvals: tuple[str, ...]  # organisations, in the order they approved
    effective_height: int = 0  # 0: not effective

    def to_list(self) -> list[Any]:
        return [self.change, self.proposer, self.organisation, self.height,
                list(self.approvals), self.effective_height]  # fmt: skip

    @classmethod
    def from_list(cls, proposal_id: str, value: list[Any]) -> "Proposal":
        change, proposer, organisation, height, approvals, effective = value
        return cls(proposal_id, dict(change), str(proposer), str(organisation), int(height),
                   tuple(str(a) for a in approvals), int(effective))  # fmt: skip

    def status(self, height: int, expiry_blocks: int) -> str:
        """pending | effective | expired, as of the block at `height`."""
        if self.effective_height:
            return EFFECTIVE
        return EXPIRED_STATUS if height > self.height + expiry_blocks else PENDING

    def to_json(self, height: int, config: Config) -> dict[str, Any]:
        """The view of `/v1/governance/proposals/{id}` as of `height`."""
        expiry = config.members.governance.expiry_blocks
        return {
            "id": self.id,
            "change": self.change,
            "proposer": self.proposer,
            "organisation": self.organisation,
            "height": self.height,
            "status": self.status(height, expiry),
            "approvals": list(self.approvals),
            "quorum": config.quorum,
            "expires_after": self.height + expiry,
            "effective_height": self.effective_height or None,
        }


def proposal_key(proposal_id: str) -> bytes:
    return state_key(history.GOV, "proposal", proposal_id)


def subject_key(subject: str) -> bytes:
    return state_key(history.GOV, "subject", subject)


def read_proposal(get: history.Getter, proposal_id: str) -> Proposal | None:
    value = get(proposal_key(proposal_id))
    return None if value is None else Proposal.from_list(proposal_id, value)


def is_governance(key: str) -> bool:
    return key.startswith(GOV_NAMESPACE)


def execute(
    get: history.Getter, tx: GovTx, height: int, before: Config, configs: history.Configs
) -> Writes:
    """The state writes of an accepted governance tx at `height`; `Refused` otherwise.
    `get` reads the state as the block has left it so far; `before` is the configuration
    in force before the block."""
    admin = before.members.admins.get(tx.signer)
    require(admin is not None, NOT_ADMIN, f"{tx.signer!r} is no admin in force")
    assert admin is not None
    require(admin.organisation in before.voters, NOT_VOTER, f"{admin.organisation} has no vote")
    proposal_id = _proposal_id(tx)
    if tx.type == PROPOSAL_TYPE:
        return _propose(get, tx, proposal_id, admin.organisation, height, configs)
    return _approve(get, proposal_id, admin.organisation, height, configs)


def _proposal_id(tx: GovTx) -> str:
    prefix = {PROPOSAL_TYPE: PROPOSALS, APPROVAL_TYPE: APPROVALS}.get(tx.type)
    require(prefix is not None, SCHEMA, f"a {GOV_NAMESPACE} tx is a proposal or approval")
    assert prefix is not None
    require(tx.key.startswith(prefix), SCHEMA, f"a {tx.type} lives under {prefix}")
    proposal_id = tx.key.removeprefix(prefix)
    require(
        "/" not in proposal_id and is_identifier(proposal_id),
        SCHEMA,
        "a proposal id is a lowercase identifier",
    )
    require(tx.type == PROPOSAL_TYPE or not tx.body, SCHEMA, "an approval's body is empty")
    return proposal_id


def _propose(
    get: history.Getter, tx: GovTx, proposal_id: str, organisation: str, height: int,
    configs: history.Configs,
) -> Writes:  # fmt: skip
    change = changes.parse(tx.body)
    changes.check_possession(change, configs.genesis.chain_id)
    require(get(proposal_key(proposal_id)) is None, DUPLICATE_PROPOSAL, f"{proposal_id!r} exists")
    now = configs.of_state(get)
    other = get(subject_key(change.subject))
    if other is not None:
        rival = read_proposal(get, str(other))
        assert rival is not None
        busy = rival.status(height, now.members.governance.expiry_blocks) == PENDING
        require(not busy, CONFLICT, f"proposal {rival.id!r} on {change.subject} is pending")
    changes.apply(now, change, height)  # only whether it fits: it takes effect on approval
    proposal = Proposal(proposal_id, change.body(), tx.signer, organisation, height,
                        (organisation,))  # fmt: skip
    writes: Writes = {subject_key(change.subject): proposal_id}
    return writes | _settle(get, proposal, height, now, configs)


def _approve(
    get: history.Getter, proposal_id: str, organisation: str, height: int,
    configs: history.Configs,
) -> Writes:  # fmt: skip
    proposal = read_proposal(get, proposal_id)
    require(proposal is not None, UNKNOWN_PROPOSAL, f"no proposal {proposal_id!r}")
    assert proposal is not None
    now = configs.of_state(get)
    status = proposal.status(height, now.members.governance.expiry_blocks)
    require(status != EFFECTIVE, NOT_PENDING, f"{proposal_id!r} is already effective")
    require(status != EXPIRED_STATUS, EXPIRED, f"{proposal_id!r} expired")
    require(organisation not in proposal.approvals, ALREADY_APPROVED, f"{organisation} approved")
    approved = Proposal(proposal.id, proposal.change, proposal.proposer, proposal.organisation,
                        proposal.height, (*proposal.approvals, organisation))  # fmt: skip
    return _settle(get, approved, height, now, configs)


def _settle(
    get: history.Getter, proposal: Proposal, height: int, now: Config, configs: history.Configs
) -> Writes:
    """The proposal's entry, and its effect if its approvals now reach the quorum."""
    votes = sum(1 for org in proposal.approvals if org in now.voters)
    if votes < now.quorum:
        return {proposal_key(proposal.id): proposal.to_list()}
    change = changes.parse(proposal.change)
    one_per_block = not (change.ends_epoch and now.epoch_height == height)
    require(one_per_block, CONFLICT, f"block {height} already ends its epoch with a change")
    changes.apply(now, change, height)  # raises conflict if it no longer fits
    effective = Proposal(proposal.id, proposal.change, proposal.proposer, proposal.organisation,
                         proposal.height, proposal.approvals, height)  # fmt: skip
    writes: Writes = {proposal_key(proposal.id): effective.to_list()}
    return writes | history.record(get, configs.genesis, change, height)
