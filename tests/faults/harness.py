"""Real node processes for the fault tests: a network on disk, one process per node, faults.

This module owns the test side of a real cluster: writing a network as `cluster init` does
(keys 0600, genesis, one node.toml per node) but with addresses of our choosing, starting each
node as its own `cityledger node run` process (or the test-only Byzantine launcher, optionally
inside a network namespace), kill -9, SIGTERM and restart, polling status with bounded
deadlines, and the end-of-run checks (one chain everywhere, `cityledger verify` on every data
dir). It never leaves a process behind: `close()` stops what it started, by PID, and nothing
here sleeps to wait for something: every wait polls a node with a deadline.
"""

import asyncio
import calendar
import contextlib
import inspect
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgpack
from aiohttp import ClientMiddlewareType
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli import network, processes
from cli.ports import free_ports
from ledger import crypto
from ledger import genesis as genesis_mod
from ledger import tx as txs
from ledger.block import (
    Block,
    Certificate,
    ChainHead,
    commit_payload,
    decode_block,
    decode_certificate,
    make_block,
)
from ledger.store import BlockStore
from node import tls
from node.auth_client import signer

ROOT: Final = Path(__file__).resolve().parents[2]
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 15.0
POLL_S: Final = 0.05  # how often a readiness or convergence poll asks the nodes
PROBE_TIMEOUT_S: Final = 2.0
COMMAND_TIMEOUT_S: Final = 120.0

# Fast consensus for tests: short view-change timeout, small blocks come quickly.
TEST_PARAMS: Final = {"block_interval_ms": 10, "view_change_timeout_ms": 1000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def log_time_ms(entry: dict[str, Any]) -> int:
    """The wall-clock milliseconds of a node's JSON log line (its `ts`, UTC, ms precision)."""
    stamp = str(entry["ts"])
    seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(stamp[20:23])


# --- The network on disk ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    index: int
    node_id: str
    url: str  # what the genesis says: where the peers reach it
    listen: str  # host:port it binds
    api: str  # where the test reaches it (the URL, or a direct address inside a namespace)
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "node.toml"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    namespaces: tuple[str, ...]
    key_file: Path


@dataclass
class Network:
    root: Path
    genesis: genesis_mod.Genesis
    nodes: list[NodeSpec]
    clients: dict[str, ClientSpec]
    client_keys: dict[str, Ed25519PrivateKey]
    validator_keys: list[Ed25519PrivateKey]

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.toml"

    def client_for(self, namespace: str) -> str:
        return next(c.client_id for c in self.clients.values() if namespace in c.namespaces)


def write_network(
    root: Path, *, urls: Sequence[str], listens: Sequence[str], apis: Sequence[str] | None = None,
    params: dict[str, int] | None = None, log_level: str = "info",
    extra: dict[str, Any] | None = None, insecure: bool = False,
) -> Network:  # fmt: skip
    """A network written by `cluster init`'s own code (cli/network.py: the same organisations,
    clerks, policies and layout), with the given peer URLs and listen addresses, fast
    consensus parameters for tests, and every node free to use all cores."""
    where = [network.Address(listen, url) for listen, url in zip(listens, urls, strict=True)]
    net = network.init(
        root, nodes=where, chain_id="faultcity", params={**TEST_PARAMS, **(params or {})},
        log_level=log_level, cores=0, settings=extra, insecure=insecure,
    )  # fmt: skip
    nodes = [
        NodeSpec(i, entry.id, urls[i], listens[i], (apis or urls)[i], entry.config.parent)
        for i, entry in enumerate(net.nodes)
    ]
    clients = {c.id: ClientSpec(c.id, c.namespaces, c.key) for c in net.clients}
    client_keys = {c.id: crypto.load_private_key(c.key) for c in net.clients}
    validator_keys = [crypto.load_private_key(entry.key) for entry in net.nodes]
    return Network(root, net.genesis, nodes, clients, client_keys, validator_keys)


def loopback_network(
    root: Path, validators: int = 4, *, insecure: bool = False, **kw: Any
) -> Network:
    ports = free_ports(validators)
    scheme = "http" if insecure else "https"
    urls = [f"{scheme}://127.0.0.1:{p}" for p in ports]
    listens = [f"127.0.0.1:{p}" for p in ports]
    return write_network(root, urls=urls, listens=listens, insecure=insecure, **kw)


def make_tx(
    net: Network, namespace: str, name: str, body: dict[str, Any], *, nonce: int,
    timestamp_ms: int | None = None, client_id: str | None = None,
) -> txs.Transaction:  # fmt: skip
    client = client_id or net.client_for(namespace)
    return txs.create(
        net.client_keys[client], chain_id=net.genesis.chain_id, client_id=client, nonce=nonce,
        timestamp_ms=now_ms() if timestamp_ms is None else timestamp_ms,
        key=f"{namespace}{name}", type_="fault.record", body=body,
    )  # fmt: skip


def certify(net: Network, block: Block, view: int = 0) -> Certificate:
    """A real certificate: Commit votes of the first quorum of validators."""
    payload = commit_payload(net.genesis.chain_id, view, block.height, block.hash)
    votes = tuple(
        (i, crypto.sign(key, crypto.Domain.COMMIT, payload))
        for i, key in enumerate(net.validator_keys[: net.genesis.quorums.commit])
    )
    return Certificate(block.height, block.hash, view, votes)


def build_chain(net: Network, blocks: int, into: Sequence[Path]) -> None:
    """Certified one-tx blocks 1..`blocks` (stamped in the recent past, as if the cluster had
    committed them), written once on a scratch store and copied into each of `into`."""
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        start = now_ms() - 60_000 - blocks * 5
        head = ChainHead.genesis(net.genesis)
        with BlockStore.open(scratch / "data", net.genesis) as store:
            for h in range(1, blocks + 1):
                stamp = start + h * 5
                tx = make_tx(net, "permits/", f"pre/{h}", {"seq": h}, nonce=h,
                             timestamp_ms=stamp - 1)  # fmt: skip
                block = make_block(head, (tx,), stamp, 0, 0)
                store.append(block, certify(net, block))
                head = head.advance(block)
        for data in into:
            shutil.copytree(scratch / "data", data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- Processes -------------------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    started_s: float


@dataclass
class Cluster:
    """The node processes of one network; every test stops it in a finally (`close`)."""

    net: Network
    http: aiohttp.ClientSession
    logs: Path
    wrap: Callable[[int, list[str]], list[str]] = lambda _i, cmd: cmd  # e.g. `ip netns exec`
    procs: dict[int, Running] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)  # per-node launcher override
    tls: ssl.SSLContext | None = None  # the `http` session's: set up here for this network

    def __post_init__(self) -> None:
        """The test talks to the nodes as a validator would: it trusts the genesis' validators
        and presents a certificate issued by validator 0's key (the peer endpoints accept
        validators only)."""
        if self.tls is not None:
            self.tls.load_verify_locations(cadata=tls.anchors_pem(self.net.genesis))
            folder = self.net.root / "test-tls"
            folder.mkdir(exist_ok=True)
            own = tls.node_identity(
                self.net.validator_keys[0], self.net.genesis, self.net.nodes[0].node_id, folder,
                ["127.0.0.1"],
            )  # fmt: skip
            self.tls.load_cert_chain(own.cert_file, own.key_file)

    @property
    def signing(self) -> tuple[ClientMiddlewareType, ...]:
        """Request middlewares that sign as validator 0 (a validator reads everything)."""
        key, node_id = self.net.validator_keys[0], self.net.nodes[0].node_id
        return (signer(key, chain_id=self.net.genesis.chain_id, identity=node_id),)

    @property
    def n(self) -> int:
        return len(self.net.nodes)

    @property
    def f(self) -> int:
        return self.net.genesis.quorums.f

    def log_file(self, i: int) -> Path:
        return self.logs / f"{self.net.nodes[i].node_id}.log"

    def log_entries(self, i: int) -> list[dict[str, Any]]:
        """Node `i`'s JSON log lines so far (every run of it, oldest first)."""
        out = []
        for line in self.log_file(i).read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def live(self) -> list[int]:
        return sorted(i for i, r in self.procs.items() if r.proc.poll() is None)

    async def start(self, i: int) -> None:
        assert i not in self.procs, f"node {i} runs already"
        spec = self.net.nodes[i]
        command = self.wrap(i, self.commands.get(i) or processes.node_command(spec.config))
        proc = processes.spawn(
            command, self.log_file(i), banner=f"starting {spec.node_id}", cwd=ROOT
        )
        self.procs[i] = Running(proc, time.monotonic())

    async def start_all(self, indices: Sequence[int] | None = None) -> None:
        targets = range(self.n) if indices is None else indices
        for i in targets:
            await self.start(i)
        await self.wait_healthy(list(targets))

    async def kill(self, i: int) -> None:
        """kill -9, and reap it."""
        running = self.procs.pop(i)
        await asyncio.to_thread(processes.kill_child, running.proc)

    async def stop(self, i: int) -> int:
        """SIGTERM (a clean stop), SIGKILL after a bound; the exit code."""
        running = self.procs.pop(i)
        code = await asyncio.to_thread(processes.stop, running.proc, STOP_TIMEOUT_S)
        if code is None:
            raise AssertionError(f"node {i} did not stop on SIGTERM within {STOP_TIMEOUT_S} s")
        return code

    async def close(self) -> None:
        """Stop everything this cluster started (the finally of every test)."""
        for i in list(self.procs):
            with contextlib.suppress(AssertionError):  # killed after the bound: reported above
                await self.stop(i)

    async def exited(self, i: int) -> int:
        """The exit code of node `i`'s process once it has exited by itself (bounded)."""
        running = self.procs.pop(i)
        try:
            return await asyncio.to_thread(running.proc.wait, START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            processes.kill_child(running.proc)
            raise TimeoutError(f"node {i} did not exit within {START_TIMEOUT_S} s") from None

    # --- HTTP --------------------------------------------------------------------------------

    def api(self, i: int) -> str:
        return self.net.nodes[i].api

    async def get(self, i: int, path: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        url = self.api(i) + path
        async with self.http.get(url, timeout=timeout, middlewares=self.signing) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, json.loads(body)
            return r.status, body

    async def status(self, i: int) -> dict[str, Any] | None:
        try:
            code, body = await self.get(i, "/v1/status")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
        return body if code == 200 and isinstance(body, dict) else None

    async def statuses(self, indices: Sequence[int]) -> dict[int, dict[str, Any] | None]:
        got = await asyncio.gather(*(self.status(i) for i in indices))
        return dict(zip(indices, got, strict=True))

    async def submit(
        self, i: int, tx: txs.Transaction, *, wait: bool = True, timeout_s: float = 20.0
    ) -> tuple[int, dict[str, Any]]:
        query = "?wait=true" if wait else ""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.http.post(
            self.api(i) + "/v1/transactions" + query, json={"raw": tx.raw.hex()}, timeout=timeout,
            middlewares=self.signing,
        ) as r:  # fmt: skip
            return r.status, await r.json()

    async def block(self, i: int, height: int) -> tuple[Block, Certificate]:
        """A block and its certificate as node `i` stores them (exact bytes, via msgpack)."""
        timeout = aiohttp.ClientTimeout(total=30)
        headers = {"Accept": "application/msgpack"}
        url = f"{self.api(i)}/peer/v1/blocks?from={height}&to={height}"
        async with self.http.get(url, headers=headers, timeout=timeout) as r:
            assert r.status == 200, await r.text()
            pairs = msgpack.unpackb(await r.read(), raw=False)
        assert len(pairs) == 1, f"node {i} has no block {height}"
        return decode_block(pairs[0][0]), decode_certificate(pairs[0][1])

    async def chain(self, i: int, low: int, high: int) -> list[tuple[bytes, bytes]]:
        """Raw (block, certificate) pairs low..high from node `i`, through the peer endpoint."""
        out: list[tuple[bytes, bytes]] = []
        timeout = aiohttp.ClientTimeout(total=60)
        while low <= high:
            url = f"{self.api(i)}/peer/v1/blocks?from={low}&to={high}"
            async with self.http.get(url, timeout=timeout) as r:
                assert r.status == 200, await r.text()
                pairs = msgpack.unpackb(await r.read(), raw=False)
            assert pairs, f"node {i} stopped serving at height {low}"
            out.extend((bytes(b), bytes(c)) for b, c in pairs)
            low += len(pairs)
        return out

    def metrics_port(self, i: int) -> int:
        """The port of node `i`'s /metrics listener (loopback, any free port): its last start's
        `listening` log line names it."""
        line = next(e for e in reversed(self.log_entries(i)) if e.get("msg") == "listening")
        return next(int(p) for p, kind in line["listeners"].items() if kind == "metrics")

    async def replica_events(self, nodes: Sequence[int], event: str) -> float:
        """The sum over `nodes` of the replica counter `event` (cityledger_replica_events_total)."""
        name = f'cityledger_replica_events_total{{event="{event}"}}'
        return sum([(await self.metrics(i)).get(name, 0.0) for i in nodes])

    async def metrics(self, i: int) -> dict[str, float]:
        """Node `i`'s /metrics samples by full name, labels included (`a_total{why="x"}`)."""
        timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        scheme = self.net.nodes[i].url.split(":", 1)[0]  # the metrics listener's is the node's
        url = f"{scheme}://127.0.0.1:{self.metrics_port(i)}/metrics"
        async with self.http.get(url, timeout=timeout) as r:
            text = await r.read()
        out = {}
        for line in bytes(text).decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # --- Waiting ----------------------------------------------------------------------------

    async def wait_for(
        self, what: str, check: Callable[[], Awaitable[bool] | bool], timeout_s: float
    ) -> float:
        """Poll `check` until it holds; the seconds it took. A miss fails with `what`."""
        start = time.monotonic()
        deadline = start + timeout_s
        while not await _holds(check):
            for i, running in self.procs.items():
                assert running.proc.poll() is None, (
                    f"node {i} exited (code {running.proc.returncode}) while waiting for {what}; "
                    f"log: {self.log_file(i)}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s:g} s: {what}")
            await asyncio.sleep(POLL_S)  # the poll interval of a bounded readiness check
        return time.monotonic() - start

    async def wait_healthy(
        self, indices: Sequence[int], timeout_s: float = START_TIMEOUT_S
    ) -> None:
        async def check() -> bool:
            got = await self.statuses(indices)
            return all(s is not None and s.get("running") for s in got.values())

        await self.wait_for(f"nodes {list(indices)} healthy", check, timeout_s)

    async def wait_height(
        self, height: int, indices: Sequence[int] | None = None, timeout_s: float = 60.0
    ) -> float:
        targets = self.live() if indices is None else list(indices)

        async def check() -> bool:
            got = await self.statuses(targets)
            return all(s is not None and s["height"] >= height for s in got.values())

        return await self.wait_for(f"nodes {targets} at height {height}", check, timeout_s)

    async def wait_converged(
        self, indices: Sequence[int] | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Wait until the nodes agree on height and head hash; that status."""
        targets = self.live() if indices is None else list(indices)
        last: dict[int, dict[str, Any] | None] = {}

        async def check() -> bool:
            nonlocal last
            last = await self.statuses(targets)
            heads = {(s["height"], s["head_hash"]) if s else None for s in last.values()}
            return len(heads) == 1 and None not in heads

        try:
            await self.wait_for(f"nodes {targets} on one head", check, timeout_s)
        except AssertionError as exc:
            heads = {i: (s["height"], s["head_hash"][:16]) if s else None for i, s in last.items()}
            raise AssertionError(f"{exc}: {heads}") from None
        status = last[targets[0]]
        assert status is not None
        return status


async def _holds(check: Callable[[], Awaitable[bool] | bool]) -> bool:
    result = check()
    return await result if inspect.isawaitable(result) else bool(result)


# --- Checks ----------------------------------------------------------------------------------


async def run_command(*args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def verify_data_dirs(net: Network, indices: Sequence[int] | None = None) -> list[str]:
    """`cityledger verify --data-dir` on every (stopped) node's store; the OK lines."""
    lines = []
    for i in range(len(net.nodes)) if indices is None else indices:
        code, out, err = await run_command(
            "verify", "--data-dir", str(net.nodes[i].data), "--genesis", str(net.genesis_path)
        )
        assert code == 0, f"verify failed on {net.nodes[i].node_id}: {out}{err}"
        assert out.startswith("OK:"), out
        lines.append(out.strip())
    return lines


async def same_chain(cluster: Cluster, indices: Sequence[int], height: int) -> list[bytes]:
    """Every node in `indices` holds byte-identical blocks 1..height (no fork, nothing
    different anywhere); the block bytes of the first."""
    chains = [await cluster.chain(i, 1, height) for i in indices]
    for i, other in zip(indices[1:], chains[1:], strict=True):
        for h, (a, b) in enumerate(zip(chains[0], other, strict=True), start=1):
            assert a[0] == b[0], f"fork: node {indices[0]} and node {i} differ at height {h}"
    return [b for b, _ in chains[0]]


def tx_ids_of(raw_blocks: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
    """Where every tx of a chain is; asserts that none is in it twice."""
    where: dict[bytes, tuple[int, int]] = {}
    for raw in raw_blocks:
        block = decode_block(raw)
        for index, tx in enumerate(block.txs):
            assert tx.tx_id not in where, (
                f"tx {tx.tx_id.hex()} committed twice: {where[tx.tx_id]} and {block.height}"
            )
            where[tx.tx_id] = (block.height, index)
    return where
