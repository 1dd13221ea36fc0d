"""A local network on disk: what `cluster init` writes and what the other cluster commands read.

Layout of a cluster directory (DESIGN.md):

    DIR/genesis.toml                 the chain: validators, clients, write policies, parameters
    DIR/nodes/<id>/node.toml         one node's config (paths relative to it)
    DIR/nodes/<id>/key.pem           the validator's private key (mode 0600)
    DIR/nodes/<id>/data/             its LevelDB block store (created by the node)
    DIR/clients/<id>.pem             client identities' private keys (mode 0600), among them
                                     DIR/clients/auditor.pem (role auditor: reads everything)
    DIR/admins/<id>.pem              one admin per organisation, id <node>-admin (mode 0600):
                                     they sign governance txs (proposals, approvals)
    DIR/logs/<id>.log, DIR/pids/<id>.pid   written by `cluster up`

The organisations of a default network are those of a small city: two municipal validators (the
finance bureau writes `fiscal/`, the planning office `permits/`) and two insurers (each may
write its own `claims/<insurer>/` and `policies/<insurer>/`), one clerk identity each. Larger
networks add more of both.
Reads: building permits are public records; the finance bureau also reads the insurers'
`claims/` (disaster relief is budgeted from them) and the planning office reads `fiscal/`; the
city's audit office has one auditor identity, `auditor`.
"""

import json
import tomllib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.gov import epochs
from ledger.gov.config import Config
from node.config import machine_cores

GENESIS_FILE: Final = "genesis.toml"
NODES_DIR: Final = "nodes"
CLIENTS_DIR: Final = "clients"
ADMINS_DIR: Final = "admins"
LOGS_DIR: Final = "logs"
PIDS_DIR: Final = "pids"
NODE_CONFIG: Final = "node.toml"
KEY_FILE: Final = "key.pem"
DEFAULT_CHAIN_ID: Final = "smartcity"
DEFAULT_BASE_PORT: Final = 7001
DEFAULT_VALIDATORS: Final = 4
PORT_MAX: Final = 65535
AUDITOR_ID: Final = "auditor"
AUDIT_OFFICE: Final = "City Audit Office"
PUBLIC_NAMESPACES: Final = ("permits/",)
# organisation -> what it reads besides its own write namespaces (when both are in the network)
READ_POLICIES: Final = {
    "City Finance Bureau": ("claims/",),
    "City Planning Office": ("fiscal/",),
}


@dataclass(frozen=True)
class Organisation:
    name: str
    kind: str  # municipal | insurer
    slug: str  # the id of its node and the prefix of its clerk's id
    namespaces: tuple[str, ...]


def insurance(slug: str) -> tuple[str, ...]:
    """An insurer writes its own claims and policies only: no insurer can overwrite another's
    claim (and a record's later versions come only from its creator, whatever the policy)."""
    return (f"claims/{slug}/", f"policies/{slug}/")


ORGANISATIONS: Final = (
    Organisation("City Finance Bureau", "municipal", "finance", ("fiscal/",)),
    Organisation("City Planning Office", "municipal", "planning", ("permits/",)),
    Organisation("Harbor Mutual Insurance", "insurer", "harbor-mutual", insurance("harbor-mutual")),
    Organisation("Civic Shield Assurance", "insurer", "civic-shield", insurance("civic-shield")),
    Organisation("City Transport Authority", "municipal", "transport", ("transport/",)),
    Organisation("Lakeside General Insurance", "insurer", "lakeside", insurance("lakeside")),
    Organisation("City Water Utility", "municipal", "water", ("utilities/",)),
)


@dataclass(frozen=True)
class Address:
    """Where one node binds (`listen`, host:port) and where its peers reach it (`url`, in the
    genesis). The same place on a plain machine; not behind a relay or a network namespace."""

    listen: str
    url: str


def addresses(host: str, ports: Sequence[int], *, insecure: bool = False) -> list[Address]:
    """One address per port on `host`, each node reached where it binds: over TLS (https://)
    unless `insecure`."""
    scheme = "http" if insecure else "https"
    return [Address(f"{host}:{port}", f"{scheme}://{host}:{port}") for port in ports]


@dataclass(frozen=True)
class NodeEntry:
    id: str
    organisation: str
    kind: str
    url: str
    config: Path
    key: Path


@dataclass(frozen=True)
class ClientEntry:
    id: str
    organisation: str
    namespaces: tuple[str, ...]
    key: Path


@dataclass(frozen=True)
class Network:
    """A cluster directory as `cluster init` wrote it."""

    root: Path
    genesis: genesis_mod.Genesis
    nodes: tuple[NodeEntry, ...]
    clients: tuple[ClientEntry, ...]

    def node(self, node_id: str) -> NodeEntry:
        return next(n for n in self.nodes if n.id == node_id)

    def client_for(self, namespace: str) -> ClientEntry:
        return next(c for c in self.clients if namespace in c.namespaces)

    def log_file(self, node_id: str) -> Path:
        return self.root / LOGS_DIR / f"{node_id}.log"

    def pid_file(self, node_id: str) -> Path:
        return self.root / PIDS_DIR / f"{node_id}.pid"

    @property
    def auditor_key(self) -> Path:
        return self.root / CLIENTS_DIR / f"{AUDITOR_ID}.pem"


def organisation_of(index: int) -> tuple[Organisation, str]:
    """The organisation of validator `index` and the node's id."""
    org = ORGANISATIONS[index % len(ORGANISATIONS)]
    rounds = index // len(ORGANISATIONS)
    return org, org.slug if rounds == 0 else f"{org.slug}-{rounds + 1}"


def is_initialised(root: Path) -> bool:
    return (root / GENESIS_FILE).exists() or (root / NODES_DIR).exists()


def init(
    root: Path,
    *,
    nodes: Sequence[Address],
    chain_id: str = DEFAULT_CHAIN_ID,
    params: dict[str, int] | None = None,
    log_level: str = "info",
    cores: int | None = None,
    settings: dict[str, str | int] | None = None,
    insecure: bool = False,
) -> Network:
    """Write keys, the genesis and one node config per validator (one per address) under
    `root`. `cores`: each node's (None: this machine's, shared among them); `settings`: more
    node config entries (name -> value), the same for every node. The nodes speak TLS unless
    `insecure` (then `insecure = true`, and the addresses' URLs must be http://).

    Raises `InvalidGenesis` if the options make no valid genesis (nothing is written then)."""
    assert not is_initialised(root)
    node_keys = [crypto.generate_key() for _ in nodes]
    orgs = [organisation_of(i) for i in range(len(nodes))]
    used = list(dict.fromkeys(org for org, _ in orgs))  # in validator order, once each
    client_keys = {f"{org.slug}-clerk": crypto.generate_key() for org in used}
    admin_keys = {admin_id(org): crypto.generate_key() for org in used}
    auditor_key = crypto.generate_key()
    doc: dict[str, Any] = {
        "chain_id": chain_id,
        "consensus": dict(params or {}),
        "validators": [
            {
                "id": node_id,
                "organisation": org.name,
                "kind": org.kind,
                "public_key": crypto.public_key_bytes(key).hex(),
                "url": address.url,
            }
            for (org, node_id), key, address in zip(orgs, node_keys, nodes, strict=True)
        ],
        "clients": [
            {
                "id": f"{org.slug}-clerk",
                "organisation": org.name,
                "public_key": crypto.public_key_bytes(client_keys[f"{org.slug}-clerk"]).hex(),
            }
            for org in used
        ]
        + [
            {
                "id": AUDITOR_ID,
                "organisation": AUDIT_OFFICE,
                "role": "auditor",
                "public_key": crypto.public_key_bytes(auditor_key).hex(),
            }
        ],
        "write_policies": [
            {"organisation": org.name, "namespaces": list(org.namespaces)} for org in used
        ],
        "read_policies": read_policies(used),
        "public_namespaces": list(PUBLIC_NAMESPACES),
        "admins": [
            {
                "id": admin_id(org),
                "organisation": org.name,
                "public_key": crypto.public_key_bytes(admin_keys[admin_id(org)]).hex(),
            }
            for org in used
        ],
    }
    genesis = genesis_mod.from_dict(doc)  # validate before writing anything
    root.mkdir(parents=True, exist_ok=True)
    (root / GENESIS_FILE).write_text(genesis_mod.dump_toml(genesis))
    node_cores = shared_cores(len(nodes)) if cores is None else cores
    for (_, node_id), key, address in zip(orgs, node_keys, nodes, strict=True):
        folder = root / NODES_DIR / node_id
        folder.mkdir(parents=True)
        crypto.write_private_key(folder / KEY_FILE, key)
        config = node_config(node_id, address.listen, node_cores, log_level, insecure=insecure)
        config += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (settings or {}).items())
        (folder / NODE_CONFIG).write_text(config)
    (root / CLIENTS_DIR).mkdir()
    for client_id, key in [*client_keys.items(), (AUDITOR_ID, auditor_key)]:
        crypto.write_private_key(root / CLIENTS_DIR / f"{client_id}.pem", key)
    (root / ADMINS_DIR).mkdir()
    for admin, key in admin_keys.items():
        crypto.write_private_key(root / ADMINS_DIR / f"{admin}.pem", key)
    return load(root)


def admin_id(org: Organisation) -> str:
    """The id of an organisation's admin: its (first) node's id and `-admin`."""
    return f"{org.slug}-admin"


def read_policies(used: Sequence[Organisation]) -> list[dict[str, Any]]:
    """The example read policies that fit the organisations of a network: a grant only when
    someone in it writes the namespace granted."""
    written = {ns for org in used for ns in org.namespaces}
    return [
        {"organisation": org.name, "namespaces": granted}
        for org in used
        if (
            granted := [
                ns
                for ns in READ_POLICIES.get(org.name, ())
                if any(w.startswith(ns) for w in written)
            ]
        )
    ]


def shared_cores(nodes: int) -> int:
    """The cores of this machine each of `nodes` nodes may count on (at least 1)."""
    return max(machine_cores() // max(nodes, 1), 1)


def node_config(
    node_id: str, listen: str, cores: int, log_level: str = "info", *, insecure: bool = False
) -> str:
    transport = (
        ["# Plain HTTP, no TLS: for measurements only (the node warns at every start).",
         "insecure = true"]
        if insecure
        else ["# TLS 1.3 on every listener, with a certificate issued by the validator's key."]
    )  # fmt: skip
    return (
        "\n".join(
            [
                f"# CityLedger node {node_id}: run it with `cityledger node run node.toml`.",
                "# Relative paths are resolved against this file's directory.",
                f'node_id = "{node_id}"',
                f'key_file = "{KEY_FILE}"          # the validator\'s private key: keep it secret',
                'data_dir = "data"             # the LevelDB block store',
                f'listen = "{listen}"',
                *transport,
                "# /metrics has a listener of its own, on loopback (port 0: any free port, logged",
                "# at start; give it a fixed port for Prometheus).",
                'metrics_listen = "127.0.0.1:0"',
                'genesis = "../../genesis.toml"',
                f'log_level = "{log_level}"',
                "# The cluster's nodes share this machine: its cores, divided among them",
                "# (0, the default, gives a node all of them).",
                f"cores = {cores}",
            ]
        )
        + "\n"
    )


def load(root: Path) -> Network:
    """Read a cluster directory; raise `InvalidGenesis` if its genesis is unreadable."""
    genesis = genesis_mod.load(root / GENESIS_FILE)
    nodes = tuple(
        NodeEntry(
            v.id,
            v.organisation,
            v.kind,
            v.url,
            root / NODES_DIR / v.id / NODE_CONFIG,
            root / NODES_DIR / v.id / KEY_FILE,
        )
        for v in genesis.validators
    )
    clients = tuple(
        ClientEntry(
            c.id,
            c.organisation,
            genesis.policies.get(c.organisation, ()),
            root / CLIENTS_DIR / f"{c.id}.pem",
        )
        for c in genesis.clients.values()
    )
    return Network(root, genesis, nodes, clients)


IN_FORCE: Final = "in force"  # a validator of the set in force
REMOVED: Final = "removed"  # removed by governance: its id is retired
NOT_IN_FORCE: Final = "not in force"  # written by `cluster add-node`, not (yet) added


def entry_of(root: Path, validator: genesis_mod.Validator) -> NodeEntry:
    """The node entry of a validator (of the genesis or added since), in `root`'s layout."""
    folder = root / NODES_DIR / validator.id
    return NodeEntry(validator.id, validator.organisation, validator.kind, validator.url,
                     folder / NODE_CONFIG, folder / KEY_FILE)  # fmt: skip


def added_entries(net: Network) -> list[NodeEntry]:
    """The nodes `cluster add-node` wrote in the directory (not in the genesis), by id; their
    URL from their `listen` and the genesis's scheme, organisation and kind unknown here."""
    scheme = urllib.parse.urlsplit(net.genesis.validators[0].url).scheme
    found = []
    for config in sorted((net.root / NODES_DIR).glob(f"*/{NODE_CONFIG}")):
        node_id = config.parent.name
        if net.genesis.validator(node_id) is not None:
            continue
        with config.open("rb") as handle:
            listen = str(tomllib.load(handle).get("listen", ""))
        found.append(NodeEntry(node_id, "", "", f"{scheme}://{listen}", config,
                               config.parent / KEY_FILE))  # fmt: skip
    return found


def every_node(net: Network, in_force: Config | None) -> list[tuple[NodeEntry, str]]:
    """Every node of the set in force (in index order), then every other node of the
    directory, each with its membership: `IN_FORCE`, `REMOVED` or `NOT_IN_FORCE`. Without the
    configuration in force (no node answered), the genesis's nodes count as in force."""
    if in_force is None:
        return [(n, IN_FORCE) for n in net.nodes] + [(n, NOT_IN_FORCE) for n in added_entries(net)]
    members = in_force.members
    rows = [(entry_of(net.root, v), IN_FORCE) for v in members.validators]
    seen = {v.id for v in members.validators}
    rows.extend(
        (n, REMOVED if n.id in in_force.former else NOT_IN_FORCE)
        for n in [*net.nodes, *added_entries(net)]
        if n.id not in seen
    )
    return rows


@dataclass(frozen=True)
class NewNode:
    """What `cluster add-node` wrote: a key and a node config, and what add-validator needs."""

    id: str
    url: str
    public_key: str
    config: Path
    proof: str  # the key's proof of possession (docs/protocol.md 20.8) for add-validator


def add_node(root: Path, node_id: str, port: int | None, cores: int | None = None) -> NewNode:
    """Write a key and a node.toml for a validator that is not in the network yet, on the
    network's host: `port`, or one above the highest port of every node of `root` (those of
    the genesis and those added before). The same scheme (https, or http when insecure) as the
    genesis's nodes. Raises `ValueError` when the id or port is taken."""
    genesis = genesis_mod.load(root / GENESIS_FILE)
    folder = root / NODES_DIR / node_id
    if not genesis_mod.is_identifier(node_id):
        raise ValueError(f"{node_id!r} is no id: lowercase letters, digits, . _ -")
    if genesis.validator(node_id) or node_id in genesis.clients or node_id in genesis.admins:
        raise ValueError(f"{node_id!r} already names a member of the genesis")
    if folder.exists():
        raise ValueError(f"{folder} already exists")
    first = urllib.parse.urlsplit(genesis.validators[0].url)
    ports = {p for p in (urllib.parse.urlsplit(v.url).port for v in genesis.validators) if p}
    for config in (root / NODES_DIR).glob(f"*/{NODE_CONFIG}"):
        with config.open("rb") as handle:
            port_text = str(tomllib.load(handle).get("listen", "")).rpartition(":")[2]
        if port_text.isdigit():
            ports.add(int(port_text))
    chosen = port if port is not None else max(ports) + 1
    if chosen in ports or not 1 <= chosen <= PORT_MAX:
        raise ValueError(f"port {chosen} is taken by another node or out of range")
    host = first.hostname or "127.0.0.1"
    insecure = first.scheme == "http"
    key = crypto.generate_key()
    folder.mkdir(parents=True)
    crypto.write_private_key(folder / KEY_FILE, key)
    node_cores = shared_cores(len(genesis.validators) + 1) if cores is None else cores
    config_text = node_config(node_id, f"{host}:{chosen}", node_cores, insecure=insecure)
    (folder / NODE_CONFIG).write_text(config_text)
    url = f"{first.scheme}://{host}:{chosen}"
    proof = epochs.sign_possession(key, genesis.chain_id, node_id)
    return NewNode(node_id, url, crypto.public_key_bytes(key).hex(), folder / NODE_CONFIG, proof)
