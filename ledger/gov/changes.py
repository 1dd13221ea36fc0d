"""The kinds of change governance makes: each one's body, subject, and effect on a `Config`.

A proposal's body names its kind in `change` and carries the kind's fields (docs/protocol.md
section 20.3). `parse` turns a body into a `Change` or refuses it (`schema`, or
`not_in_force` for what this version does not carry out: rules.* parameters); `apply` returns the
configuration with the change made, or refuses it (`conflict`) when it does not fit the
configuration it is applied to. Both are pure and change nothing when they refuse.

The kinds that end an epoch (ledger/gov/epochs.py: add-validator, remove-validator,
rotate-validator-key, set-params of consensus.* parameters) take effect at the boundary the
replica (consensus/epoch.py) and the node (node/epochs.py) follow.
"""

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ledger import crypto
from ledger.genesis import (
    CONSENSUS_BOUNDS,
    GOV_NAMESPACE,
    GOVERNANCE_BOUNDS,
    ROLES,
    Admin,
    Client,
    Genesis,
    GovernancePolicy,
    is_identifier,
    is_namespace,
)
from ledger.genesis import (
    KINDS as VALIDATOR_KINDS,
)
from ledger.gov import epochs
from ledger.gov.codes import CONFLICT, NOT_IN_FORCE
from ledger.gov.config import OLD_KEYS_MAX, Config
from ledger.kinds.base import SCHEMA, Refused, require

ADD_CLIENT: Final = "add-client"
REVOKE_CLIENT: Final = "revoke-client"
ROTATE_CLIENT_KEY: Final = "rotate-client-key"
ADD_ADMIN: Final = "add-admin"
REMOVE_ADMIN: Final = "remove-admin"
SET_WRITE_POLICY: Final = "set-write-policy"
SET_READ_POLICY: Final = "set-read-policy"
SET_PARAMS: Final = "set-params"
ADD_VALIDATOR: Final = "add-validator"
REMOVE_VALIDATOR: Final = "remove-validator"
ROTATE_VALIDATOR_KEY: Final = "rotate-validator-key"

NAMESPACES_MAX: Final = 32  # namespaces one policy change names
ORGANISATION_BYTES_MAX: Final = 256  # as in the genesis file
URL_BYTES_MAX: Final = 256  # a validator's URL
PROOF_HEX: Final = 128  # hex digits of a proof of possession (a 64-byte signature)
PARAMS_PREFIX_IN_FORCE: Final = "governance."
PARAMS_PREFIXES_OTHER: Final = (epochs.CONSENSUS_PREFIX, "rules.")  # rules.*: not in force
PARAMS_MAX: Final = 8  # parameters one set-params change names

FIELDS: Final[dict[str, tuple[str, ...]]] = {
    ADD_CLIENT: ("id", "organisation", "role", "public_key"),
    REVOKE_CLIENT: ("id",),
    ROTATE_CLIENT_KEY: ("id", "public_key"),
    ADD_ADMIN: ("id", "organisation", "public_key"),
    REMOVE_ADMIN: ("id",),
    SET_WRITE_POLICY: ("organisation", "namespaces"),
    SET_READ_POLICY: ("organisation", "namespaces"),
    SET_PARAMS: ("params",),
    ADD_VALIDATOR: ("id", "organisation", "kind", "public_key", "url", "proof"),
    REMOVE_VALIDATOR: ("id",),
    ROTATE_VALIDATOR_KEY: ("id", "public_key", "url", "proof"),
}
VALIDATOR_CHANGES: Final = (ADD_VALIDATOR, REMOVE_VALIDATOR, ROTATE_VALIDATOR_KEY)
KINDS: Final = tuple(FIELDS)


@dataclass(frozen=True)
class Change:
    """A parsed change: its kind and its fields (checked), as the proposal's body held them."""

    kind: str
    fields: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.fields)[name]

    @property
    def ends_epoch(self) -> bool:
        """Whether the change takes effect at an epoch boundary (the validator set or a
        consensus parameter)."""
        if self.kind == SET_PARAMS:
            return any(epochs.is_consensus_param(name) for name in self.get("params"))
        return self.kind in VALIDATOR_CHANGES

    def body(self) -> dict[str, Any]:
        """The canonical body (keys sorted): what a proposal of this change carries."""
        return dict(sorted([("change", self.kind), *self.fields]))

    @property
    def subject(self) -> str:
        """What the change is about: two pending proposals never share a subject."""
        if self.kind in (SET_WRITE_POLICY, SET_READ_POLICY):
            return f"{self.kind}:{self.get('organisation')}"
        if self.kind == SET_PARAMS:
            return SET_PARAMS
        return f"id:{self.get('id')}"  # an id names one signer, whichever the kind


def parse(body: Mapping[str, Any]) -> Change:
    """The change a proposal's body describes; `Refused` with `schema` or `not_in_force`."""
    kind = body.get("change")
    if not isinstance(kind, str) or kind not in KINDS:
        raise Refused(SCHEMA, f"change: one of {', '.join(KINDS)}")
    names = FIELDS[kind]
    unknown = sorted(set(body) - {"change", *names})
    require(not unknown, SCHEMA, f"unknown field {unknown[:1]!r} for {kind}")
    for name in names:
        require(name in body, SCHEMA, f"field {name!r} is missing")
        _CHECKS[name](body[name])
    if kind == SET_PARAMS:
        _check_params_in_force(body["params"])
    return Change(kind, tuple(sorted((n, body[n]) for n in names)))


def _check_id(value: Any) -> None:
    require(isinstance(value, str) and is_identifier(value), SCHEMA, "id: a lowercase identifier")


def _check_organisation(value: Any) -> None:
    ok = isinstance(value, str) and 0 < len(value.encode()) <= ORGANISATION_BYTES_MAX
    require(ok and value.isprintable(), SCHEMA, "organisation: 1 to 256 bytes of text")


def _check_role(value: Any) -> None:
    require(value in ROLES, SCHEMA, f"role: one of {', '.join(ROLES)}")


def _check_public_key(value: Any) -> None:
    _public_key(value)


def _public_key(value: Any) -> bytes:
    """The 32 bytes of a strict Ed25519 public key given as 64 hex digits."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) and len(value) == 64 else b""
        crypto.load_public_key(raw)
    except (ValueError, crypto.WeakKey) as exc:
        why = f"public_key: 64 hex digits of a strict Ed25519 key ({exc})"
        raise Refused(SCHEMA, why) from None
    return raw


def _check_namespaces(value: Any) -> None:
    ok = isinstance(value, list) and len(value) <= NAMESPACES_MAX
    require(ok, SCHEMA, f"namespaces: a list of at most {NAMESPACES_MAX} prefixes")
    require(len(set(value)) == len(value), SCHEMA, "namespaces: distinct prefixes")
    for ns in value:
        require(isinstance(ns, str) and is_namespace(ns), SCHEMA, f"namespace {ns!r}: 'fiscal/'")
        require(not ns.startswith(GOV_NAMESPACE), SCHEMA, f"{GOV_NAMESPACE} is for admins only")


def _check_params(value: Any) -> None:
    ok = isinstance(value, dict) and 1 <= len(value) <= PARAMS_MAX
    require(ok, SCHEMA, f"params: a map of 1 to {PARAMS_MAX} parameters")
    for name, number in value.items():
        ok = isinstance(number, int) and not isinstance(number, bool)
        require(ok, SCHEMA, f"params.{name}: an integer")
        known = name.startswith((PARAMS_PREFIX_IN_FORCE, *PARAMS_PREFIXES_OTHER))
        require(known, SCHEMA, f"params.{name}: governance.*, consensus.* or rules.*")


def _check_params_in_force(params: dict[str, int]) -> None:
    for name, number in params.items():
        consensus = epochs.is_consensus_param(name)
        require(name.startswith(PARAMS_PREFIX_IN_FORCE) or consensus, NOT_IN_FORCE,
                f"{name}: not yet")  # fmt: skip
        prefix, bounds = (
            (epochs.CONSENSUS_PREFIX, CONSENSUS_BOUNDS)
            if consensus
            else (PARAMS_PREFIX_IN_FORCE, GOVERNANCE_BOUNDS)
        )
        short = name.removeprefix(prefix)
        require(short in bounds, SCHEMA, f"params.{name}: unknown parameter")
        low, high = bounds[short]
        require(low <= number <= high, SCHEMA, f"params.{name}: in [{low}, {high}]")


def _check_kind(value: Any) -> None:
    require(value in VALIDATOR_KINDS, SCHEMA, f"kind: one of {', '.join(VALIDATOR_KINDS)}")


def _check_url(value: Any) -> None:
    ok = isinstance(value, str) and len(value.encode()) <= URL_BYTES_MAX and value.isprintable()
    ok = ok and value.startswith(("http://", "https://"))
    require(ok, SCHEMA, f"url: an http:// or https:// URL of at most {URL_BYTES_MAX} bytes")


def _check_proof(value: Any) -> None:
    ok = isinstance(value, str) and len(value) == PROOF_HEX
    try:
        ok = ok and len(bytes.fromhex(value)) * 2 == PROOF_HEX
    except ValueError:
        ok = False
    require(ok, SCHEMA, f"proof: {PROOF_HEX} hex digits (a signature)")


_CHECKS: Final[dict[str, Callable[[Any], None]]] = {
    "id": _check_id,
    "organisation": _check_organisation,
    "role": _check_role,
    "public_key": _check_public_key,
    "namespaces": _check_namespaces,
    "params": _check_params,
    "kind": _check_kind,
    "url": _check_url,
    "proof": _check_proof,
}


def check_possession(change: Change, chain_id: str) -> None:
    """`Refused(bad_proof)` unless a change enrolling a validator key proves its possession
    (docs/protocol.md section 20.8); nothing for the other kinds."""
    if change.kind in (ADD_VALIDATOR, ROTATE_VALIDATOR_KEY):
        epochs.check_possession(dict(change.fields), chain_id)


def apply(config: Config, change: Change, height: int) -> Config:
    """`config` with `change` made by the block at `height`; `Refused(conflict)` if it does
    not fit `config` (and then nothing changes)."""
    members, changed = _APPLY[change.kind](config, change)
    if change.ends_epoch:
        changed |= epochs.ended(config, height)
    return config.next_version(members, height, **changed)


Applied = tuple[Genesis, dict[str, Any]]  # members, and the other fields of Config it changes


def _add_client(config: Config, change: Change) -> Applied:
    signer_id, organisation = change.get("id"), change.get("organisation")
    require(not config.id_taken(signer_id), CONFLICT, f"the id {signer_id!r} is taken")
    known = organisation in config.organisations()
    require(known, CONFLICT, f"no organisation {organisation!r} in the configuration")
    raw = _unused_key(config, change)
    client = Client(signer_id, organisation, raw, crypto.load_public_key(raw), change.get("role"))
    m = config.members
    return dataclasses.replace(m, clients={**m.clients, signer_id: client}), {}


def _revoke_client(config: Config, change: Change) -> Applied:
    signer_id = change.get("id")
    m = config.members
    require(signer_id in m.clients, CONFLICT, f"no client {signer_id!r} in force")
    clients = {k: c for k, c in m.clients.items() if k != signer_id}
    retired = {**config.retired, signer_id: m.clients[signer_id]}
    return dataclasses.replace(m, clients=clients), {"retired": retired}


def _rotate_client_key(config: Config, change: Change) -> Applied:
    signer_id = change.get("id")
    m = config.members
    client = m.clients.get(signer_id)
    require(client is not None, CONFLICT, f"no client {signer_id!r} in force")
    assert client is not None
    raw = _unused_key(config, change)
    new = dataclasses.replace(client, public_key=raw, key=crypto.load_public_key(raw))
    old = (client.public_key, *config.rotated.get(signer_id, ()))[:OLD_KEYS_MAX]
    rotated = {**config.rotated, signer_id: old}
    return dataclasses.replace(m, clients={**m.clients, signer_id: new}), {"rotated": rotated}


def _add_admin(config: Config, change: Change) -> Applied:
    signer_id, organisation = change.get("id"), change.get("organisation")
    require(not config.id_taken(signer_id), CONFLICT, f"the id {signer_id!r} is taken")
    raw = _unused_key(config, change)
    admin = Admin(signer_id, organisation, raw, crypto.load_public_key(raw))
    m = config.members
    return dataclasses.replace(m, admins={**m.admins, signer_id: admin}), {}


def _remove_admin(config: Config, change: Change) -> Applied:
    signer_id = change.get("id")
    m = config.members
    admin = m.admins.get(signer_id)
    require(admin is not None, CONFLICT, f"no admin {signer_id!r} in force")
    assert admin is not None
    last = config.admins_of(admin.organisation) == (signer_id,)
    require(
        not (last and admin.organisation in config.voters),
        CONFLICT,
        f"{signer_id!r} is the last admin of {admin.organisation}, which votes",
    )
    admins = {k: a for k, a in m.admins.items() if k != signer_id}
    return dataclasses.replace(m, admins=admins), {"retired": {**config.retired, signer_id: admin}}


def _set_policy(config: Config, change: Change) -> Applied:
    organisation = change.get("organisation")
    known = organisation in config.organisations()
    require(known, CONFLICT, f"no organisation {organisation!r} in the configuration")
    m = config.members
    table = m.policies if change.kind == SET_WRITE_POLICY else m.reads
    updated = {k: v for k, v in table.items() if k != organisation}
    if change.get("namespaces"):
        updated[organisation] = tuple(change.get("namespaces"))
    if change.kind == SET_WRITE_POLICY:
        return dataclasses.replace(m, policies=updated), {}
    return dataclasses.replace(m, reads=updated), {}


def _set_params(config: Config, change: Change) -> Applied:
    params = change.get("params")
    consensus = {k: v for k, v in params.items() if epochs.is_consensus_param(k)}
    m = epochs.set_consensus_params(config, consensus) if consensus else config.members
    values = dataclasses.asdict(m.governance)
    for name, number in params.items():
        if name.startswith(PARAMS_PREFIX_IN_FORCE):
            values[name.removeprefix(PARAMS_PREFIX_IN_FORCE)] = number
    policy = GovernancePolicy(**values)
    voters = len(config.voters)
    require(policy.quorum <= voters, CONFLICT, f"a quorum above the {voters} voting organisations")
    return dataclasses.replace(m, governance=policy), {}


def _unused_key(config: Config, change: Change) -> bytes:
    raw = _public_key(change.get("public_key"))
    require(not config.key_in_use(raw), CONFLICT, "the public key is already in force")
    return raw


_APPLY: Final[dict[str, Callable[[Config, Change], Applied]]] = {
    ADD_CLIENT: _add_client,
    REVOKE_CLIENT: _revoke_client,
    ROTATE_CLIENT_KEY: _rotate_client_key,
    ADD_ADMIN: _add_admin,
    REMOVE_ADMIN: _remove_admin,
    SET_WRITE_POLICY: _set_policy,
    SET_READ_POLICY: _set_policy,
    SET_PARAMS: _set_params,
    ADD_VALIDATOR: lambda config, change: epochs.add_validator(config, dict(change.fields)),
    REMOVE_VALIDATOR: lambda config, change: epochs.remove_validator(config, dict(change.fields)),
    ROTATE_VALIDATOR_KEY: lambda config, change: epochs.rotate_validator_key(
        config, dict(change.fields)
    ),
}
assert set(_APPLY) == set(FIELDS)
