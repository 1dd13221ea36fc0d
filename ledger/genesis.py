"""The genesis file: membership, write and read permissions and consensus parameters of one chain.

Loading validates everything and reports every problem at once (`InvalidGenesis.problems`).
The genesis hash (SHA-256 over the canonical encoding of its content) identifies the chain and
is the `prev_hash` of block 1. A verifier needs nothing but this file and the blocks.
"""

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import crypto
from ledger.encoding import encode
from ledger.errors import InvalidGenesis
from ledger.primitives import (
    ADMINS_MAX,
    BLOCK_BYTES_MAX,
    BLOCK_TXS_MAX,
    CLIENTS_MAX,
    VALIDATORS_MAX,
    ValidatorIndex,
)

GENESIS_BYTES_MAX: Final = 4 * 1024 * 1024
KINDS: Final = ("municipal", "insurer")
CLERK: Final = "clerk"
AUDITOR: Final = "auditor"
ROLES: Final = (CLERK, AUDITOR)
GOV_NAMESPACE: Final = "_gov/"  # reserved for governance txs (ledger/gov): admins write it
_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NAMESPACE_RE: Final = re.compile(r"^([A-Za-z0-9._:-]+/)+$")


def is_identifier(text: str) -> bool:
    """Whether `text` may name a chain, validator, client or admin."""
    return _ID_RE.fullmatch(text) is not None


def is_namespace(text: str) -> bool:
    """Whether `text` is a record-key namespace of a policy ('fiscal/', 'claims/acme/')."""
    return _NAMESPACE_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class Quorums:
    """Owns f and every threshold for n = 3f+1 (or more) validators."""

    n: int

    def __post_init__(self) -> None:
        assert self.n >= 1

    @property
    def f(self) -> int:
        """Byzantine nodes tolerated."""
        return (self.n - 1) // 3

    @property
    def commit(self) -> int:
        """Matching votes that make a certificate: floor((n+f)/2)+1, which is 2f+1 at n = 3f+1.

        Any two such quorums share at least f+1 validators (so an honest one), and the n-f honest
        validators can always form one. 2f+1 alone would be unsafe whenever n > 3f+1 (at n = 5,
        two quorums of 3 could meet only in the one Byzantine validator).
        """
        return (self.n + self.f) // 2 + 1

    @property
    def weak(self) -> int:
        """Votes that include at least one honest node: f+1."""
        return self.f + 1


@dataclass(frozen=True)
class Validator:
    index: ValidatorIndex
    id: str
    organisation: str
    kind: str
    public_key: bytes
    url: str
    key: Ed25519PublicKey = field(compare=False, repr=False)


@dataclass(frozen=True)
class Client:
    id: str
    organisation: str
    public_key: bytes
    key: Ed25519PublicKey = field(compare=False, repr=False)
    role: str = CLERK  # an auditor reads everything and writes nothing


@dataclass(frozen=True)
class Admin:
    """An organisation's governance identity: it signs `_gov/` txs and nothing else."""

    id: str
    organisation: str
    public_key: bytes
    key: Ed25519PublicKey = field(compare=False, repr=False)


@dataclass(frozen=True)
class GovernancePolicy:
    """Genesis `[governance]` (ledger/gov): how many voting organisations must approve a change
    (0: more than half of them) and after how many blocks a pending proposal expires."""

    quorum: int = 0
    expiry_blocks: int = 1000


GOVERNANCE_BOUNDS: Final = {"quorum": (0, VALIDATORS_MAX), "expiry_blocks": (1, 1_000_000)}


@dataclass(frozen=True)
class ConsensusParams:
    block_txs_max: int = 2000
    block_bytes_max: int = 8 * 1024 * 1024
    block_interval_ms: int = 20
    view_change_timeout_ms: int = 2000
    checkpoint_interval: int = 16
    tx_ttl_ms: int = 10 * 60 * 1000  # how old a tx's timestamp may be when it is committed
    clock_skew_ms: int = 30 * 1000  # how far a timestamp may run ahead of the block's


_PARAM_BOUNDS: Final = {
    "block_txs_max": (1, BLOCK_TXS_MAX),
    "block_bytes_max": (64 * 1024, BLOCK_BYTES_MAX),
    "block_interval_ms": (0, 60_000),
    "view_change_timeout_ms": (100, 600_000),
    "checkpoint_interval": (1, 10_000),
    "tx_ttl_ms": (1000, 7 * 24 * 3600 * 1000),
    "clock_skew_ms": (0, 3600 * 1000),
}
CONSENSUS_BOUNDS: Final = _PARAM_BOUNDS  # what governance's set-params may set (ledger/gov)


@dataclass(frozen=True)
class RuleParams:
    """The thresholds of risk monitoring (ledger/kinds/risks.py): genesis `[rules]`. Alerts
    flag for a person and never refuse a tx. Every value is an integer (the genesis hashes
    canonical bytes, which hold no floats): the Benford bound is in parts per million
    (`benford_mad_max = 0.015` in the file is read as `benford_mad_max_ppm = 15000`)."""

    approval_threshold_cents: int = 1_000_000
    split_window_ms: int = 86_400_000
    round_amount_cents: int = 100_000
    velocity_window_ms: int = 86_400_000
    velocity_max_payments: int = 20
    benford_min_payments: int = 300
    benford_mad_max_ppm: int = 15_000


_RULE_BOUNDS: Final = {
    "approval_threshold_cents": (1, 10**15),
    "split_window_ms": (1, 366 * 86_400_000),
    "round_amount_cents": (1, 10**15),
    "velocity_window_ms": (1, 366 * 86_400_000),
    "velocity_max_payments": (1, 255),  # below recent.RECENT_PAYMENTS_MAX
    "benford_min_payments": (9, 10**9),
    "benford_mad_max_ppm": (0, 1_000_000),
}


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    validators: tuple[Validator, ...]
    clients: dict[str, Client]
    policies: dict[str, tuple[str, ...]]  # organisation -> record-key namespaces it may write
    params: ConsensusParams
    hash: bytes = field(compare=False)
    reads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # org -> extra namespaces
    public_namespaces: tuple[str, ...] = ()  # readable by anyone, without an identity
    rules: RuleParams = RuleParams()  # risk monitoring thresholds
    admins: dict[str, Admin] = field(default_factory=dict)  # id -> governance identity
    governance: GovernancePolicy = GovernancePolicy()

    @property
    def quorums(self) -> Quorums:
        return Quorums(len(self.validators))

    def validator(self, validator_id: str) -> Validator | None:
        return next((v for v in self.validators if v.id == validator_id), None)

    def may_write(self, client: Client, record_key: str) -> bool:
        if client.role == AUDITOR:
            return False
        return record_key.startswith(self.policies.get(client.organisation, ()))

    def readable(self, organisation: str) -> tuple[str, ...]:
        """The namespaces a clerk of `organisation` reads besides the public ones: its own
        write namespaces and what the read policies grant it."""
        return self.policies.get(organisation, ()) + self.reads.get(organisation, ())

    def may_read(self, organisation: str | None, record_key: str) -> bool:
        """Whether a clerk of `organisation` (None: anonymous) may read `record_key`.
        Auditors and validators read everything; callers decide that before asking."""
        if record_key.startswith(self.public_namespaces):
            return True
        if organisation is None:
            return False
        # Governance records are read by every identity: each may be asked to approve.
        return record_key.startswith((*self.readable(organisation), GOV_NAMESPACE))

    def to_dict(self) -> dict[str, Any]:
        """The content as plain values, in the shape of the TOML file. The access fields
        (a client's non-clerk `role`, `read_policies`, `public_namespaces`) appear only when
        set, so a genesis without them keeps the hash it always had."""
        doc: dict[str, Any] = {
            "chain_id": self.chain_id,
            "consensus": {k: getattr(self.params, k) for k in _PARAM_BOUNDS},
            "validators": [
                {
                    "id": v.id,
                    "organisation": v.organisation,
                    "kind": v.kind,
                    "public_key": v.public_key.hex(),
                    "url": v.url,
                }
                for v in self.validators
            ],
            "clients": [_client_dict(c) for c in self.clients.values()],
            "write_policies": _policy_list(self.policies),
        }
        if self.reads:
            doc["read_policies"] = _policy_list(self.reads)
        if self.public_namespaces:
            doc["public_namespaces"] = list(self.public_namespaces)
        if self.rules != RuleParams():  # the defaults leave older genesis hashes as they were
            doc["rules"] = dataclasses.asdict(self.rules)
        if self.admins:  # like the access fields: absent unless set, older hashes unchanged
            doc["admins"] = [_admin_dict(a) for a in self.admins.values()]
        if self.governance != GovernancePolicy():
            doc["governance"] = dataclasses.asdict(self.governance)
        return doc


def _admin_dict(a: Admin) -> dict[str, str]:
    return {"id": a.id, "organisation": a.organisation, "public_key": a.public_key.hex()}


def _client_dict(c: Client) -> dict[str, str]:
    out = {"id": c.id, "organisation": c.organisation, "public_key": c.public_key.hex()}
    if c.role != CLERK:
        out["role"] = c.role
    return out


def _policy_list(policies: dict[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    return [{"organisation": org, "namespaces": list(ns)} for org, ns in policies.items()]


def genesis_hash(content: dict[str, Any]) -> bytes:
    return crypto.sha256(crypto.Domain.GENESIS.value + encode(content))


def load(path: Path) -> Genesis:
    """Read and validate a genesis TOML file."""
    try:
        with path.open("rb") as file:  # read one byte past the limit: never all of a huge file
            data = file.read(GENESIS_BYTES_MAX + 1)
    except OSError as exc:
        raise InvalidGenesis([f"cannot read {path}: {exc.strerror}"]) from None
    if len(data) > GENESIS_BYTES_MAX:
        raise InvalidGenesis([f"{path} is larger than {GENESIS_BYTES_MAX} bytes"])
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidGenesis([f"{path} is not valid TOML: {exc}"]) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InvalidGenesis([f"{path} is not valid TOML: nested too deeply"]) from None
    return from_dict(doc)


def from_dict(doc: dict[str, Any]) -> Genesis:
    """Validate a parsed genesis document; raise `InvalidGenesis` listing every problem."""
    problems: list[str] = []
    chain_id = doc.get("chain_id")
    if not isinstance(chain_id, str) or not _ID_RE.fullmatch(chain_id):
        problems.append("chain_id: expected a lowercase identifier of at most 64 characters")
    params = _params(doc.get("consensus", {}), problems)
    validators = _validators(doc.get("validators"), problems)
    clients = _clients(doc.get("clients", []), problems)
    policies = _policies(doc.get("write_policies", []), "write_policies", problems)
    reads = _policies(doc.get("read_policies", []), "read_policies", problems)
    public = _namespaces(doc.get("public_namespaces", []), "public_namespaces", problems)
    rules = _rules(doc.get("rules", {}), problems)
    admins = _admins(doc.get("admins", []), problems)
    governance = _governance(doc.get("governance", {}), problems)
    known = {v.organisation for v in validators} | {c.organisation for c in clients.values()}
    problems.extend(
        f"admins: organisation {a.organisation!r} has no validator or client"
        for a in admins.values()
        if a.organisation not in known
    )
    problems.extend(
        f"admins: id {a.id!r} is also a client's or a validator's (signers are named by id)"
        for a in admins.values()
        if a.id in clients or any(v.id == a.id for v in validators)
    )
    for table, entries in (("write_policies", policies), ("read_policies", reads)):
        problems.extend(
            f"{table}: organisation {org!r} has no validator or client"
            for org in entries
            if org not in known
        )
    problems.extend(
        f"clients: id {v.id!r} is also a validator's (request signers are named by id)"
        for v in validators
        if v.id in clients
    )
    problems.extend(f"unknown field {name!r}" for name in sorted(set(doc) - _TOP_LEVEL))
    if problems:
        raise InvalidGenesis(problems)
    assert isinstance(chain_id, str)
    genesis = Genesis(
        str(chain_id), validators, clients, policies, params, b"", reads, public, rules, admins,
        governance,
    )  # fmt: skip
    return dataclasses.replace(genesis, hash=genesis_hash(genesis.to_dict()))


_TOP_LEVEL: Final = frozenset(
    ("chain_id", "consensus", "validators", "clients", "write_policies", "read_policies",
     "public_namespaces", "rules", "admins", "governance")
)  # fmt: skip


def _rules(raw: Any, problems: list[str]) -> RuleParams:
    if not isinstance(raw, dict):
        problems.append("rules: expected a table")
        return RuleParams()
    values: dict[str, int] = {}
    for given, raw_value in raw.items():
        name, value = given, raw_value
        if (
            given == "benford_mad_max"
            and isinstance(raw_value, float | int)
            and 0 <= raw_value <= 1
        ):
            name, value = "benford_mad_max_ppm", round(raw_value * 1_000_000)
        if name not in _RULE_BOUNDS:
            problems.append(f"rules.{name}: unknown parameter")
            continue
        low, high = _RULE_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"rules.{name}: expected an integer in [{low}, {high}]")
            continue
        values[name] = value
    return RuleParams(**values)


def _params(raw: Any, problems: list[str]) -> ConsensusParams:
    if not isinstance(raw, dict):
        problems.append("consensus: expected a table")
        return ConsensusParams()
    values: dict[str, int] = {}
    for name, value in raw.items():
        if name not in _PARAM_BOUNDS:
            problems.append(f"consensus.{name}: unknown parameter")
            continue
        low, high = _PARAM_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"consensus.{name}: expected an integer in [{low}, {high}]")
            continue
        values[name] = value
    return ConsensusParams(**values)


def _governance(raw: Any, problems: list[str]) -> GovernancePolicy:
    if not isinstance(raw, dict):
        problems.append("governance: expected a table")
        return GovernancePolicy()
    values: dict[str, int] = {}
    for name, value in raw.items():
        if name not in GOVERNANCE_BOUNDS:
            problems.append(f"governance.{name}: unknown parameter")
            continue
        low, high = GOVERNANCE_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"governance.{name}: expected an integer in [{low}, {high}]")
            continue
        values[name] = value
    return GovernancePolicy(**values)


def _admins(raw: Any, problems: list[str]) -> dict[str, Admin]:
    if not isinstance(raw, list) or len(raw) > ADMINS_MAX:
        problems.append(f"admins: expected a list of at most {ADMINS_MAX} admins")
        return {}
    out: dict[str, Admin] = {}
    for i, entry in enumerate(raw):
        where = f"admins[{i}]"
        fields = _fields(entry, where, ("id", "organisation", "public_key"), problems)
        if fields is None:
            continue
        key = _key(fields["public_key"], where, problems)
        if fields["id"] in out:
            problems.append(f"admins: duplicate id {fields['id']!r}")
        elif key is not None:
            out[fields["id"]] = Admin(fields["id"], fields["organisation"], key[0], key[1])
    return out


def _key(raw: Any, where: str, problems: list[str]) -> tuple[bytes, Ed25519PublicKey] | None:
    try:
        # exactly 64 digits: bytes.fromhex alone would also accept spaces between bytes
        public = bytes.fromhex(raw) if isinstance(raw, str) and len(raw) == 64 else b""
        return public, crypto.load_public_key(public)
    except crypto.WeakKey as exc:
        if exc.reason == "length":
            problems.append(f"{where}.public_key: expected 64 hex digits of an Ed25519 public key")
        else:  # strict Ed25519 (docs/protocol.md section 3)
            problems.append(f"{where}.public_key: refused Ed25519 public key: {exc}")
        return None
    except ValueError:
        problems.append(f"{where}.public_key: expected 64 hex digits of an Ed25519 public key")
        return None


def _validators(raw: Any, problems: list[str]) -> tuple[Validator, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= VALIDATORS_MAX:
        problems.append(f"validators: expected between 1 and {VALIDATORS_MAX} validators")
        return ()
    out: list[Validator] = []
    for i, entry in enumerate(raw):
        where = f"validators[{i}]"
        fields = _fields(
            entry, where, ("id", "organisation", "kind", "public_key", "url"), problems
        )
        if fields is None:
            continue
        if fields["kind"] not in KINDS:
            problems.append(f"{where}.kind: expected one of {', '.join(KINDS)}")
        if not fields["url"].startswith(("http://", "https://")):
            problems.append(f"{where}.url: expected an http:// or https:// URL")
        key = _key(fields["public_key"], where, problems)
        if key is not None:
            out.append(
                Validator(ValidatorIndex(i), fields["id"], fields["organisation"],
                          fields["kind"], key[0], fields["url"], key[1])
            )  # fmt: skip
    _unique([v.id for v in out], "validators: duplicate id", problems)
    _unique([v.public_key.hex() for v in out], "validators: duplicate public key", problems)
    return tuple(out)


def _clients(raw: Any, problems: list[str]) -> dict[str, Client]:
    if not isinstance(raw, list) or len(raw) > CLIENTS_MAX:
        problems.append(f"clients: expected a list of at most {CLIENTS_MAX} clients")
        return {}
    out: dict[str, Client] = {}
    for i, entry in enumerate(raw):
        where = f"clients[{i}]"
        role = entry.get("role", CLERK) if isinstance(entry, dict) else CLERK
        if role not in ROLES:
            problems.append(f"{where}.role: expected one of {', '.join(ROLES)}")
        rest = {k: v for k, v in entry.items() if k != "role"} if isinstance(entry, dict) else entry
        fields = _fields(rest, where, ("id", "organisation", "public_key"), problems)
        if fields is None:
            continue
        key = _key(fields["public_key"], where, problems)
        if fields["id"] in out:
            problems.append(f"clients: duplicate id {fields['id']!r}")
        elif key is not None and role in ROLES:
            out[fields["id"]] = Client(
                fields["id"], fields["organisation"], key[0], key[1], str(role)
            )
    return out


def _policies(raw: Any, table: str, problems: list[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, list):
        problems.append(f"{table}: expected a list of tables")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(raw):
        where = f"{table}[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"organisation", "namespaces"}:
            problems.append(f"{where}: expected exactly organisation and namespaces")
            continue
        org, namespaces = entry["organisation"], entry["namespaces"]
        if not isinstance(org, str) or not org:
            problems.append(f"{where}.organisation: expected a non-empty string")
            continue
        before = len(problems)
        checked = _namespaces(namespaces, f"{where}.namespaces", problems)
        if table == "write_policies" and any(ns.startswith(GOV_NAMESPACE) for ns in checked):
            problems.append(f"{where}.namespaces: {GOV_NAMESPACE} is written by admins only")
        if len(problems) == before:
            out[org] = out.get(org, ()) + checked
    return out


def _namespaces(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(
        isinstance(ns, str) and _NAMESPACE_RE.fullmatch(ns) for ns in raw
    ):
        problems.append(f"{where}: expected prefixes such as 'fiscal/'")
        return ()
    return tuple(raw)


def _fields(
    entry: Any, where: str, names: tuple[str, ...], problems: list[str]
) -> dict[str, str] | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a table")
        return None
    bad = False
    for name in names:
        value = entry.get(name)
        if not isinstance(value, str) or not value or len(value) > 256:
            problems.append(f"{where}.{name}: expected a non-empty string")
            bad = True
    for name in sorted(set(entry) - set(names)):
        problems.append(f"{where}.{name}: unknown field")
        bad = True
    if "id" in names and isinstance(entry.get("id"), str) and not _ID_RE.fullmatch(entry["id"]):
        problems.append(f"{where}.id: expected a lowercase identifier (a-z, 0-9, . _ -)")
        bad = True
    return None if bad else {name: entry[name] for name in names}


def _unique(values: list[str], message: str, problems: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            problems.append(f"{message} {value!r}")
        seen.add(value)


def dump_toml(genesis: Genesis) -> str:
    """Render `genesis` as the TOML file `load` reads back to an equal genesis."""
    doc = genesis.to_dict()
    lines = [
        "# CityLedger genesis: membership, write permissions and consensus parameters.",
        "# Its hash identifies the chain; changing any byte of its content makes a new chain.",
        f"chain_id = {_toml_str(doc['chain_id'])}",
    ]
    if "public_namespaces" in doc:
        lines.append(f"public_namespaces = {_toml_value(doc['public_namespaces'])}")
    lines += ["", "[consensus]"]
    lines += [f"{k} = {v}" for k, v in doc["consensus"].items()]
    if "rules" in doc:
        lines += ["", "[rules]"]
        lines += [f"{k} = {v}" for k, v in doc["rules"].items()]
    if "governance" in doc:
        lines += ["", "[governance]"]
        lines += [f"{k} = {v}" for k, v in doc["governance"].items()]
    for table in ("validators", "clients", "admins", "write_policies", "read_policies"):
        for entry in doc.get(table, []):
            lines += ["", f"[[{table}]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: str | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_str(x) for x in value) + "]"
    return _toml_str(value)


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else _toml_escape(c) for c in escaped) + '"'


def _toml_escape(c: str) -> str:
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
