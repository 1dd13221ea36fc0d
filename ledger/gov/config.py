"""The configuration in force: who may sign, write, read and govern, and since which height.

A `Config` is the genesis with every effective governance change applied in order
(ledger/gov/changes.py). Its `members` is that configuration in the genesis's own shape: a
`Genesis` whose `hash` is still the chain's, so every rule written against the genesis
(transaction validity, request authentication, read access) applies the configuration in
force by being handed `members` instead of the genesis file.

Version and epoch: `version` counts the effective changes since genesis; `since` is the height
of the block whose change made this version. `epoch` counts the changes of the validator set
and of the consensus parameters (ledger/gov/epochs.py), `epoch_height` is the height of the
block that made the latest one (0 in epoch 0): the last block of the previous epoch, so the
epoch's first block is `epoch_height + 1`. A block at height h is executed and certified
under the configuration after block h-1: its validators are `members.validators` of that
configuration, its quorum `members.quorums.commit`.

Identities are never reused: a revoked client's or removed admin's id stays in `retired`, so
an id names one signer for the whole chain (its txs stay attributable after it leaves).
"""

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from ledger.genesis import Admin, Client, Genesis, Validator

EPOCH_GENESIS: Final = 0
OLD_KEYS_MAX: Final = 4  # rotated-out keys kept per client


@dataclass(frozen=True)
class Config:
    members: Genesis
    version: int = 0
    since: int = 0
    epoch: int = EPOCH_GENESIS
    epoch_height: int = 0  # the block that ended the previous epoch (0: epoch 0)
    # Revoked clients and removed admins, with the key each held last: a tx it signed before
    # it left may still reach a block, where its signature is checked and the tx refused.
    retired: dict[str, Client | Admin] = dataclasses.field(default_factory=dict)
    # Keys rotated out, by client id, the latest first (at most OLD_KEYS_MAX): a tx signed
    # with one before the rotation may still reach a block, where it is refused.
    rotated: dict[str, tuple[bytes, ...]] = dataclasses.field(default_factory=dict)
    # Removed validators, by id: their ids are retired for good, as a client's.
    former: dict[str, Validator] = dataclasses.field(default_factory=dict)

    @property
    def voters(self) -> tuple[str, ...]:
        """The organisations whose admins vote: those that run a validator, in name order."""
        return tuple(sorted({v.organisation for v in self.members.validators}))

    @property
    def quorum(self) -> int:
        """Approving organisations a change needs: the policy's number, or more than half of
        the voters when it names none; never more than there are voters (a policy set when
        there were more voters cannot freeze governance once some leave)."""
        voters = len(self.voters)
        wanted = self.members.governance.quorum or voters // 2 + 1
        return min(wanted, voters)

    def organisations(self) -> frozenset[str]:
        """Every organisation the configuration knows: of a validator, client or admin."""
        m = self.members
        return frozenset(
            [v.organisation for v in m.validators]
            + [c.organisation for c in m.clients.values()]
            + [a.organisation for a in m.admins.values()]
        )

    def id_taken(self, signer_id: str) -> bool:
        """Whether `signer_id` names, or once named, a validator, client or admin."""
        m = self.members
        return (
            signer_id in m.clients
            or signer_id in m.admins
            or signer_id in self.retired
            or signer_id in self.former
            or m.validator(signer_id) is not None
        )

    def key_in_use(self, public_key: bytes) -> bool:
        """Whether a validator, client or admin in force holds `public_key`."""
        return public_key in set(self._keys())

    def _keys(self) -> Iterator[bytes]:
        m = self.members
        yield from (v.public_key for v in m.validators)
        yield from (c.public_key for c in m.clients.values())
        yield from (a.public_key for a in m.admins.values())

    def admins_of(self, organisation: str) -> tuple[str, ...]:
        return tuple(a.id for a in self.members.admins.values() if a.organisation == organisation)

    def signer(self, signer_id: str) -> Client | Admin | None:
        """The client or admin in force, or retired, that `signer_id` names."""
        m = self.members
        return m.clients.get(signer_id) or m.admins.get(signer_id) or self.retired.get(signer_id)

    def next_version(self, members: Genesis, height: int, **changed: Any) -> "Config":
        """This configuration changed by one effective change at `height` (`changed`: the
        `retired` or `rotated` table that the change replaces)."""
        assert height >= self.since  # several changes may take effect in one block
        return dataclasses.replace(
            self, members=members, version=self.version + 1, since=height, **changed
        )

    def to_json(self, height: int) -> dict[str, Any]:
        """The view of `/v1/config` and `cityledger members --json` at `height`."""
        m = self.members
        return {
            "height": height,
            "epoch": self.epoch,
            "epoch_height": self.epoch_height,
            "version": self.version,
            "since": self.since,
            "validators": [_validator_json(v) for v in m.validators],
            "clients": [_client_json(c) for c in sorted(m.clients.values(), key=lambda c: c.id)],
            "admins": [
                {"id": a.id, "organisation": a.organisation, "public_key": a.public_key.hex()}
                for a in sorted(m.admins.values(), key=lambda a: a.id)
            ],
            "retired": sorted([*self.retired, *self.former]),
            "policies": {
                "write": {org: list(ns) for org, ns in sorted(m.policies.items())},
                "read": {org: list(ns) for org, ns in sorted(m.reads.items())},
                "public": list(m.public_namespaces),
                "governance": {
                    "voters": list(self.voters),
                    "quorum": self.quorum,
                    "expiry_blocks": m.governance.expiry_blocks,
                },
            },
            "params": {
                "consensus": dataclasses.asdict(m.params),
                "rules": dataclasses.asdict(m.rules),
                "governance": dataclasses.asdict(m.governance),
            },
        }


def _validator_json(v: Validator) -> dict[str, str]:
    return {"id": v.id, "organisation": v.organisation, "kind": v.kind,
            "public_key": v.public_key.hex(), "url": v.url}  # fmt: skip


def _client_json(c: Client) -> dict[str, str]:
    return {"id": c.id, "organisation": c.organisation, "role": c.role,
            "public_key": c.public_key.hex()}  # fmt: skip


def from_genesis(genesis: Genesis) -> Config:
    return Config(genesis)
