"""Real nodes on loopback for the node tests: config files on disk, one event loop, no sleeps.

`Cluster` binds every node's listening socket on 127.0.0.1 port 0 first, so the genesis can
name each validator's real URL before any node starts; it writes genesis.toml, key.pem and
node.toml per node (the node loads them like `cityledger node run` does) and stops every node
it started. Every wait is bounded with `within`.
"""

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import pytest
from aiohttp import ClientMiddlewareType
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import crypto, genesis
from ledger import tx as txs
from node import config as node_config
from node import tls, tls_sites
from node.auth_client import signer
from node.service import Node
from tests import factory

T = TypeVar("T")
WAIT_S = 30.0


async def within(awaitable: Awaitable[T], seconds: float = WAIT_S) -> T:
    """Await with a bound: a hang fails the test instead of the suite."""
    return await asyncio.wait_for(awaitable, seconds)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def bind_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)  # noqa: FBT003 (socket's own positional API)
    return sock


@dataclass
class Cluster:
    root: Path
    net: factory.Network
    ports: list[int]
    nodes: list[Node | None] = field(default_factory=list)
    extra_config: dict[str, Any] = field(default_factory=dict)

    @property
    def genesis(self) -> genesis.Genesis:
        return self.net.genesis

    def url(self, i: int) -> str:
        return f"https://127.0.0.1:{self.ports[i]}"

    def metrics_url(self, i: int) -> str:
        return f"https://127.0.0.1:{self.node(i).port_of(tls_sites.METRICS)}"

    def peer_tls(self, i: int) -> ssl.SSLContext:
        """A client context presenting validator `i`'s node certificate (as its peers do)."""
        own = tls.identity_files(self.root / f"node{i}" / "data")
        return tls.client_context(tls.anchors_pem(self.genesis), own)

    def node(self, i: int) -> Node:
        node = self.nodes[i]
        assert node is not None, f"node {i} is stopped"
        return node

    def config_path(self, i: int) -> Path:
        return self.root / f"node{i}" / "node.toml"

    def write_config(self, i: int, data_dir: str = "data", **extra: Any) -> Path:
        folder = self.root / f"node{i}"
        folder.mkdir(parents=True, exist_ok=True)
        key = folder / "key.pem"
        if not key.exists():
            crypto.write_private_key(key, self.net.validator_keys[i])
        lines = [
            f'node_id = "node{i}"', 'key_file = "key.pem"', f'data_dir = "{data_dir}"',
            f'listen = "127.0.0.1:{self.ports[i]}"', 'genesis = "../genesis.toml"',
            'log_level = "debug"',
        ]  # fmt: skip
        lines += [f"{k} = {v}" for k, v in {**self.extra_config, **extra}.items()]
        path = self.config_path(i)
        path.write_text("\n".join(lines) + "\n")
        return path

    async def start(self, i: int, sock: socket.socket | None = None, **extra: Any) -> Node:
        config = node_config.load(self.write_config(i, **extra))
        node = Node(config, sock=sock or bind_socket(self.ports[i]))
        await within(node.start())
        self.nodes[i] = node
        return node

    async def stop(self, i: int) -> None:
        node, self.nodes[i] = self.nodes[i], None
        if node is not None:
            await within(node.stop())

    def tx(self, namespace: str, name: str, body: dict[str, Any], **kw: Any) -> txs.Transaction:
        client = self.net.client_for(namespace)
        return self.net.tx(client, f"{namespace}{name}", body, kw.get("timestamp_ms", now_ms()))

    async def wait_height(self, height: int, nodes: list[int] | None = None) -> None:
        targets = range(len(self.nodes)) if nodes is None else nodes
        await within(
            asyncio.gather(*(self.node(i).runtime.shell.wait_height(height) for i in targets))
        )


async def start_cluster(
    root: Path, validators: int, params: dict[str, int] | None = None,
    genesis_extra: dict[str, Any] | None = None, **extra: Any,
) -> Cluster:  # fmt: skip
    """Start `validators` nodes of the factory's network; `genesis_extra` adds to (or replaces)
    top-level genesis fields, e.g. read policies."""
    socks = [bind_socket() for _ in range(validators)]
    ports = [s.getsockname()[1] for s in socks]
    net = factory.network(validators)
    doc = net.genesis.to_dict()
    for i, v in enumerate(doc["validators"]):
        v["url"] = f"https://127.0.0.1:{ports[i]}"
    doc["consensus"] |= {"block_interval_ms": 10, "view_change_timeout_ms": 1000} | (params or {})
    doc |= genesis_extra or {}
    net.genesis = genesis.from_dict(doc)
    (root / "genesis.toml").write_text(genesis.dump_toml(net.genesis))
    cluster = Cluster(root, net, ports, [None] * validators, dict(extra))
    try:
        for i, sock in enumerate(socks):
            await cluster.start(i, sock)
    except BaseException:
        await stop_all(cluster)
        raise
    return cluster


async def stop_all(cluster: Cluster) -> None:
    for i in range(len(cluster.nodes)):
        await cluster.stop(i)


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[Cluster]:
    """One validator (f = 0): it commits alone, which is enough for every route test."""
    cluster = await start_cluster(tmp_path, 1)
    try:
        yield cluster
    finally:
        await stop_all(cluster)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Four validators (f = 1), for the routes whose answers depend on a quorum's votes."""
    four = await start_cluster(tmp_path, 4)
    try:
        yield four
    finally:
        await stop_all(four)


def signed_as(identity: str, key: Ed25519PrivateKey) -> tuple[ClientMiddlewareType, ...]:
    """Request middlewares that sign as `identity` on the factory's chain."""
    return (signer(key, chain_id=factory.CHAIN_ID, identity=identity),)


VALIDATOR0: Final = signed_as("node0", factory.seeded_key(f"{factory.CHAIN_ID}/validator/0"))


# The test networks' validators (seeded keys: the same for every cluster of up to this many).
TRUSTED_VALIDATORS = 7


def client_tls() -> ssl.SSLContext:
    """What a client of the test clusters connects with: it trusts exactly the validators of
    the test networks (`factory.network`), as the CLI trusts those of its genesis."""
    return tls.genesis_client_context(factory.network(TRUSTED_VALIDATORS).genesis)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose requests are signed by validator node0 (reads everything)."""
    connector = aiohttp.TCPConnector(ssl=client_tls())
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, middlewares=VALIDATOR0
    ) as session:
        yield session


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_tls())
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


def tx_json(tx: txs.Transaction) -> dict[str, Any]:
    """A tx in the JSON field form a client sends."""
    return {
        "chain_id": tx.chain_id, "client_id": tx.client_id, "nonce": tx.nonce,
        "timestamp_ms": tx.timestamp_ms, "key": tx.key, "type": tx.type, "body": tx.body,
        "signature": tx.signature.hex(),
    }  # fmt: skip
