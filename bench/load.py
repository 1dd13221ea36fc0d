"""The load process of `bench/cluster.py`: pre-signed records submitted through the public API.

Run by the benchmark as its own process (so that signing and HTTP client work are not
charged to the nodes, and are measured apart):

    python bench/load.py SPEC_JSON

It first signs every record of the run (several genesis clients, each writing its own
namespace; ~250-byte transactions), then prints `ready` and waits for a line on stdin. On that
line it submits them to the nodes' `POST /v1/transactions?wait=true` (msgpack, batched or one
tx per request) with at most `concurrency` requests in flight, either as fast as answers come
back (closed loop, `rate` 0) or at a fixed offered rate (open loop: request j is due at
t0 + j * batch / rate, whatever the answers do). A tx's latency is the time from sending its
request to the node's answer that it is committed (`wait=true` answers once the node has
committed every tx of the request). Requests refused with `pool_full` are sent again after a
short pause (their latency still counts from the first send). Everything stops at the
deadline; txs not known committed by then are reported as such.

The result is one JSON line on stdout (see `Result`); progress goes to stderr.
"""

import asyncio
import base64
import json
import os
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

MSGPACK = "application/msgpack"
RETRY_PAUSE_S = 0.05
CDF_POINTS = 500
TIMELINE_STEP_S = 0.25
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Spec:
    dir: str
    urls: list[str]
    txs: int
    mode: str = "batched"  # batched | single
    batch: int = 200  # txs per request in batched mode
    concurrency: int = 16  # requests in flight at most
    rate: float = 0.0  # offered tx/s; 0 = closed loop
    deadline_s: float = 120.0
    run_id: str = "r0"  # makes record keys and nonces of successive runs distinct
    nonce_base: int = 0
    clients: int = 4  # genesis clients that sign (round robin)
    workload: str = "plain"  # plain | fiscal-setup | fiscal (bench/fiscal.py: typed records)
    target: str = "cityledger"  # cityledger | etcd (bench/etcd.py: puts of the same size)


@dataclass
class Result:
    offered_tx_per_s: float
    submitted: int
    committed: int
    rejected: dict[str, int]
    duration_s: float  # first send to last commit answer
    tx_per_s: float
    latency_ms: dict[str, float]
    latency_cdf_ms: list[float]  # CDF_POINTS quantiles, evenly spaced
    timeline: list[tuple[float, int]]  # (seconds since start, txs committed so far)
    sign_s: float
    tx_bytes_mean: float
    load_cpu_s: float
    late_requests: int  # open loop: requests sent after their due time (too many in flight)
    errors: dict[str, int] = field(default_factory=dict)


def _trusted_nodes(spec: Spec) -> ssl.SSLContext | bool:
    """TLS nodes are trusted as the CLI trusts them: exactly the validators of the cluster's
    genesis (never the system store); plain http:// (`insecure`) needs nothing."""
    if not any(url.startswith("https://") for url in spec.urls):
        return True
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ledger import genesis as genesis_mod
    from node import tls

    return tls.genesis_client_context(genesis_mod.load(Path(spec.dir) / "genesis.toml"))


def _sign_all(spec: Spec) -> tuple[list[bytes], float, Any]:
    """Every record of the run, signed now (before the measured phase), and the client
    middleware that signs each request as the first of those clients (measured: it is part of
    what every client pays)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import fiscal as bench_fiscal  # bench/fiscal.py, beside this file

    from ledger import crypto
    from ledger import genesis as genesis_mod
    from ledger import tx as txs
    from node.auth_client import signer

    root = Path(spec.dir)
    genesis = genesis_mod.load(root / "genesis.toml")
    signers = []
    clerks = [c for c in genesis.clients.values() if c.role == genesis_mod.CLERK]
    for client in clerks[: spec.clients if spec.workload == "plain" else len(clerks)]:
        key = crypto.load_private_key(root / "clients" / f"{client.id}.pem")
        namespace = genesis.policies[client.organisation][0]
        signers.append((client.id, key, namespace))
    started = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    out: list[bytes] = []
    note = "inspection passed; documents filed with the city archive"
    fiscal = [s for s in signers if s[2] == "fiscal/"][:1]
    for i in range(spec.txs):
        client_id, key, namespace = signers[i % len(signers)]
        record_key = f"{namespace}bench/{spec.run_id}/{i % 1000}"
        type_ = "inspection"
        body: dict[str, Any] = {
            "seq": i, "amount": 1000 + i, "note": note, "ref": f"{spec.run_id}-{i:09d}",
        }  # fmt: skip
        if spec.workload != "plain":  # the finance bureau's typed records (bench/fiscal.py)
            client_id, key, _ = fiscal[0]
            made = bench_fiscal.setup(i, now_ms) if spec.workload == "fiscal-setup" else (
                bench_fiscal.record(i, spec.run_id))  # fmt: skip
            record_key, type_, body = made
        tx = txs.create(
            key, chain_id=genesis.chain_id, client_id=client_id, nonce=spec.nonce_base + i,
            timestamp_ms=now_ms, key=record_key, type_=type_, body=body,
        )  # fmt: skip
        out.append(tx.raw)
        if i % 20_000 == 0 and i:
            sys.stderr.write(f"\rload: signed {i}/{spec.txs}")
    sys.stderr.write(f"\rload: signed {spec.txs}/{spec.txs}\n")
    first_id, first_key, _ = signers[0]
    signing = (signer(first_key, chain_id=genesis.chain_id, identity=first_id),)
    return out, time.perf_counter() - started, signing


class Runner:
    def __init__(self, spec: Spec, raws: list[bytes], signing: Any = ()) -> None:
        self.spec = spec
        self.signing = signing  # client middlewares: every request signed (protocol section 16)
        size = 1 if spec.mode == "single" else spec.batch
        self.units = [raws[i : i + size] for i in range(0, len(raws), size)]
        self.latencies_ms: list[float] = []
        self.commit_times: list[tuple[float, int]] = []
        self.rejected: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.committed = 0
        self.late = 0
        self.t0 = 0.0
        self.last_commit = 0.0
        self.deadline = 0.0

    async def run(self) -> None:
        spec = self.spec
        connector = aiohttp.TCPConnector(
            limit=spec.concurrency + 8, force_close=False, ssl=_trusted_nodes(spec)
        )
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, middlewares=self.signing
        ) as session:
            self.t0 = time.perf_counter()
            self.deadline = self.t0 + spec.deadline_s
            if spec.rate > 0:
                await self._open_loop(session)
            else:
                await self._closed_loop(session)

    async def _closed_loop(self, session: aiohttp.ClientSession) -> None:
        pending = iter(enumerate(self.units))

        async def worker() -> None:
            for j, unit in pending:
                if time.perf_counter() > self.deadline:
                    return
                await self._submit(session, j, unit, time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(self.spec.concurrency)))

    async def _open_loop(self, session: aiohttp.ClientSession) -> None:
        slots = asyncio.Semaphore(self.spec.concurrency)
        interval = len(self.units[0]) / self.spec.rate
        tasks = []
        for j, unit in enumerate(self.units):
            due = self.t0 + j * interval
            now = time.perf_counter()
            if now > self.deadline:
                break
            if due > now:
                await asyncio.sleep(due - now)
            if slots.locked():
                self.late += 1
            await slots.acquire()
            task = asyncio.create_task(self._submit(session, j, unit, due))
            task.add_done_callback(lambda _t: slots.release())
            tasks.append(task)
        await asyncio.gather(*tasks)

    async def _submit(
        self, session: aiohttp.ClientSession, j: int, unit: list[bytes], sent: float
    ) -> None:
        if self.spec.target == "etcd":
            await self._put(session, j, unit, sent)
            return
        url = self.spec.urls[j % len(self.spec.urls)] + "/v1/transactions?wait=true"
        headers = {"Content-Type": MSGPACK, "Accept": MSGPACK}
        todo = unit
        while todo and time.perf_counter() < self.deadline:
            body = msgpack.packb(
                {"transactions": todo} if self.spec.mode == "batched" else todo[0],
                use_bin_type=True,
            )
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            answer = msgpack.unpackb(raw, raw=False) if raw else {}
            now = time.perf_counter()
            done = [a for a in answer.get("accepted", ()) if a.get("status") == "committed"]
            if done:
                self._record(len(done), sent, now)
            again = []
            for r in answer.get("rejected", ()):
                self.rejected[r["error"]] = self.rejected.get(r["error"], 0) + 1
                if r["error"] == "pool_full":
                    again.append(todo[r["index"]])
            if status >= 400 and not answer.get("rejected"):
                self.errors[f"http_{status}"] = self.errors.get(f"http_{status}", 0) + 1
            todo = again
            if todo:
                await asyncio.sleep(RETRY_PAUSE_S)

    async def _put(
        self, session: aiohttp.ClientSession, j: int, unit: list[bytes], sent: float
    ) -> None:
        """etcd's JSON gateway: one put per request, or a batch as one Txn of puts. etcd
        answers once the request is committed by its Raft majority and applied."""
        base = self.spec.urls[j % len(self.spec.urls)]
        puts = [_etcd_put(raw) for raw in unit]
        if self.spec.mode == "single":
            url, doc = base + "/v3/kv/put", puts[0]
        else:
            url, doc = base + "/v3/kv/txn", {"success": [{"requestPut": p} for p in puts]}
        body = json.dumps(doc).encode()
        while time.perf_counter() < self.deadline:
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if status == 200:
                self._record(len(unit), sent, time.perf_counter())
                return
            self.errors[f"http_{status}"] = self.errors.get(f"http_{status}", 0) + 1
            if status < 500:  # etcd will never take this request: do not send it again
                return
            await asyncio.sleep(RETRY_PAUSE_S)  # overloaded or between leaders: again

    def _record(self, count: int, sent: float, now: float) -> None:
        latency_ms = (now - sent) * 1000
        self.latencies_ms.extend([latency_ms] * count)
        self.committed += count
        self.last_commit = now
        self.commit_times.append((now - self.t0, count))

    def result(self, sign_s: float, tx_bytes_mean: float, cpu_s: float) -> Result:
        duration = max(self.last_commit - self.t0, 1e-9)
        lat = sorted(self.latencies_ms)
        timeline: list[tuple[float, int]] = []
        total, step = 0, TIMELINE_STEP_S
        for t, count in sorted(self.commit_times):
            total += count
            while t > step:
                timeline.append((round(step, 3), total - count))
                step += TIMELINE_STEP_S
        timeline.append((round(duration, 3), total))
        return Result(
            offered_tx_per_s=self.spec.rate,
            submitted=sum(len(u) for u in self.units),
            committed=self.committed,
            rejected=self.rejected,
            duration_s=round(duration, 3),
            tx_per_s=round(self.committed / duration, 1),
            latency_ms={q: round(quantile(lat, p), 2) for q, p in _QUANTILES.items()},
            latency_cdf_ms=[round(quantile(lat, i / (CDF_POINTS - 1)), 2) for i in
                            range(CDF_POINTS)] if lat else [],
            timeline=timeline,
            sign_s=round(sign_s, 2),
            tx_bytes_mean=round(tx_bytes_mean, 1),
            load_cpu_s=round(cpu_s, 2),
            late_requests=self.late,
            errors=self.errors,
        )  # fmt: skip


_QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99, "max": 1.0, "min": 0.0}


def quantile(ordered: list[float], p: float) -> float:
    """The p-quantile of sorted values (nearest rank); 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p * (len(ordered) - 1))))]


ETCD_PUT_BYTES = 250  # key and value of one put: the size of one of CityLedger's signed txs
ETCD_VALUE = b"inspection passed; documents filed with the city archive. " * 4


def _etcd_puts(spec: Spec) -> list[bytes]:
    """The reference's records: key NUL value, ~250 bytes each as CityLedger's signed txs."""
    keys = (f"bench/{spec.run_id}/{i:09d}".encode() for i in range(spec.txs))
    return [key + b"\0" + ETCD_VALUE[: ETCD_PUT_BYTES - len(key)] for key in keys]


def _etcd_put(raw: bytes) -> dict[str, str]:
    key, _, value = raw.partition(b"\0")
    return {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(argv[1]))
    if spec.target == "etcd":
        raws, sign_s, signing = _etcd_puts(spec), 0.0, ()
    else:
        raws, sign_s, signing = _sign_all(spec)
    separators = len(raws) if spec.target == "etcd" else 0  # key NUL value: not sent
    tx_bytes_mean = (sum(map(len, raws)) - separators) / max(len(raws), 1)
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1
    cpu = time.process_time()
    runner = Runner(spec, raws, signing)
    asyncio.run(runner.run())
    result = runner.result(sign_s, tx_bytes_mean, time.process_time() - cpu)
    print(json.dumps(asdict(result)), flush=True)
    sys.stderr.write(
        f"load: {result.committed}/{result.submitted} committed, {result.tx_per_s} tx/s, "
        f"p50 {result.latency_ms['p50']} ms, p99 {result.latency_ms['p99']} ms\n"
    )
    os._exit(0)  # the signed txs are many small objects: skip their teardown


if __name__ == "__main__":
    sys.exit(main(sys.argv))
