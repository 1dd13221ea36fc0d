"""Deterministic test networks: keys from seeds, a genesis, signed transactions, certified blocks.

Shared by the ledger tests, the simulator and the benchmarks, so all of them build chains the
same way the protocol does (every signature real, every certificate 2f+1 real Commit votes).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import block as blocks
from ledger import crypto, genesis
from ledger import tx as txs

BASE_TIME_MS = 1_800_000_000_000

ORGS = (
    ("City Finance Bureau", "municipal", "fiscal/"),
    ("City Planning Office", "municipal", "permits/"),
    ("Harbor Mutual Insurance", "insurer", "claims/"),
    ("Civic Shield Assurance", "insurer", "policies/"),
)


def seeded_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        crypto.sha256(b"cityledger-test-key/" + name.encode())
    )


@dataclass
class Network:
    genesis: genesis.Genesis
    validator_keys: list[Ed25519PrivateKey]
    client_keys: dict[str, Ed25519PrivateKey]
    nonces: dict[str, int] = field(default_factory=dict)
    admin_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def client_for(self, namespace: str) -> str:
        org = next(o for o, ns in self.genesis.policies.items() if namespace in ns)
        return next(c.id for c in self.genesis.clients.values() if c.organisation == org)

    def tx(
        self, client_id: str, key: str, body: dict[str, Any], timestamp_ms: int,
        type_: str = "record",
    ) -> txs.Transaction:  # fmt: skip
        nonce = self.nonces.get(client_id, 0)
        self.nonces[client_id] = nonce + 1
        signing_key = self.client_keys.get(client_id) or self.admin_keys[client_id]
        return txs.create(
            signing_key, chain_id=self.genesis.chain_id, client_id=client_id,
            nonce=nonce, timestamp_ms=timestamp_ms, key=key, type_=type_, body=body,
        )  # fmt: skip

    def certify(self, block: blocks.Block, view: int = 0) -> blocks.Certificate:
        payload = blocks.commit_payload(self.genesis.chain_id, view, block.height, block.hash)
        quorum = self.genesis.quorums.commit
        votes = tuple(
            (i, crypto.sign(k, crypto.Domain.COMMIT, payload))
            for i, k in enumerate(self.validator_keys[:quorum])
        )
        return blocks.Certificate(block.height, block.hash, view, votes)


CHAIN_ID: Final = "testcity"


def network(
    validators: int = 4, clients_per_org: int = 1, chain_id: str = CHAIN_ID, admins_per_org: int = 0
) -> Network:
    vkeys = [seeded_key(f"{chain_id}/validator/{i}") for i in range(validators)]
    doc: dict[str, Any] = {
        "chain_id": chain_id,
        "consensus": {"checkpoint_interval": 4, "view_change_timeout_ms": 1000},
        "validators": [
            {
                "id": f"node{i}",
                "organisation": ORGS[i % len(ORGS)][0],
                "kind": ORGS[i % len(ORGS)][1],
                "public_key": crypto.public_key_bytes(k).hex(),
                "url": f"http://127.0.0.1:{7001 + i}",
            }
            for i, k in enumerate(vkeys)
        ],
        "clients": [],
        "write_policies": [{"organisation": o, "namespaces": [ns]} for o, _, ns in ORGS],
    }
    ckeys: dict[str, Ed25519PrivateKey] = {}
    for org, _, ns in ORGS:
        for j in range(clients_per_org):
            cid = f"{ns.rstrip('/')}-clerk{j}"
            ckeys[cid] = seeded_key(f"{chain_id}/client/{cid}")
            doc["clients"].append(
                {"id": cid, "organisation": org,
                 "public_key": crypto.public_key_bytes(ckeys[cid]).hex()}
            )  # fmt: skip
    akeys = _admins(doc, chain_id, admins_per_org)
    return Network(genesis.from_dict(doc), vkeys, ckeys, admin_keys=akeys)


def _admins(doc: dict[str, Any], chain_id: str, per_org: int) -> dict[str, Ed25519PrivateKey]:
    """`per_org` admins of each organisation, `<namespace>-admin<j>` (none: no `admins` table,
    so the genesis hash is the one it has always been)."""
    keys: dict[str, Ed25519PrivateKey] = {}
    for org, _, ns in ORGS if per_org else ():
        for j in range(per_org):
            aid = f"{ns.rstrip('/')}-admin{j}"
            keys[aid] = seeded_key(f"{chain_id}/admin/{aid}")
            doc.setdefault("admins", []).append(
                {"id": aid, "organisation": org,
                 "public_key": crypto.public_key_bytes(keys[aid]).hex()}
            )  # fmt: skip
    return keys


def chain(
    net: Network, blocks_count: int, txs_per_block: int
) -> Iterator[tuple[blocks.Block, blocks.Certificate]]:
    """Yield certified blocks 1..blocks_count, each with records from every organisation."""
    head = blocks.ChainHead.genesis(net.genesis)
    clients = sorted(net.client_keys)
    for h in range(1, blocks_count + 1):
        now = BASE_TIME_MS + h * 1000
        body = tuple(
            net.tx(
                clients[i % len(clients)],
                f"{clients[i % len(clients)].split('-')[0]}/rec-{(h * 7 + i) % 50}",
                {"amount": h * 100 + i, "memo": f"block {h} item {i}"},
                now - 10,
            )
            for i in range(txs_per_block)
        )
        view = 0
        block = blocks.make_block(head, body, now, view, view % len(net.genesis.validators))
        yield block, net.certify(block, view)
        head = head.advance(block)
