"""Fuzz the peer endpoints of a real node with random and mutated msgpack.

The fuzzer holds one validator's key (it is at most one faulty validator, f = 1), builds a corpus
of real envelopes signed with it (Status, Prepare, Commit, Checkpoint, ViewChange, a PrePrepare
out of turn, a tx batch whose tx has a forged client signature), and posts batches to
`/peer/v1/messages` of another node: mutated envelopes (bit flips, overwritten, inserted,
deleted and duplicated bytes, truncation, splices), random msgpack values of every kind, random
bytes, and mutated batch framing; it also asks `/peer/v1/blocks` with random ranges. Every case
comes from one seeded `random.Random` (the seed is in the failure message). Afterwards: no 5xx,
only 204 / 400 / 413 answers, the node healthy, the cluster still commits, one head everywhere.
"""

import random
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgpack
import pytest

from consensus import messages as m
from ledger import crypto
from ledger import tx as txs
from ledger.block import ChainHead, make_block
from ledger.encoding import encode
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import Cluster, loopback_network, make_tx, now_ms

TARGET: Final = 0
FUZZER: Final = 1  # whose key the fuzzer signs with
SEED: Final = 7
MUTATIONS_MAX: Final = 4
DEPTH_MAX: Final = 4


def corpus(c: Cluster) -> list[bytes]:
    """Valid envelopes signed by validator FUZZER alone (none of which can commit anything)."""
    g, key = c.net.genesis, c.net.validator_keys[FUZZER]

    def sign(msg: m.Message) -> bytes:
        return m.encode_message(m.sign(msg, key, g.chain_id), g.chain_id)  # type: ignore[type-var]

    digest = crypto.sha256(b"no such block")
    forged_tx = txs.create(
        crypto.generate_key(), chain_id=g.chain_id, client_id=c.net.client_for("fiscal/"),
        nonce=1, timestamp_ms=now_ms(), key="fiscal/peer-fuzz", type_="fuzz", body={"x": 1},
    )  # fmt: skip
    # Only txs with forged client signatures: a validly signed tx may rightly get committed.
    block = make_block(ChainHead.genesis(g), (forged_tx,), now_ms(), 0, FUZZER)
    return [
        sign(m.Status(0, 1, FUZZER)),
        sign(m.Prepare(0, 1, digest, FUZZER)),
        sign(m.Commit(0, 1, digest, FUZZER)),
        sign(m.Checkpoint(4, digest, FUZZER)),
        sign(m.ViewChange(1, 0, g.hash, None, (), FUZZER)),
        sign(m.PrePrepare(0, 1, block, FUZZER)),
        sign(m.TxBatch((forged_tx,), FUZZER)),
    ]


class Fuzzer:
    def __init__(self, rng: random.Random, seeds: list[bytes]) -> None:
        self.rng = rng
        self.seeds = seeds

    def mutate(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, MUTATIONS_MAX)):
            op = self.rng.randrange(7)
            at = self.rng.randrange(len(out) + 1)
            if op == 0 and out:  # flip bits
                out[min(at, len(out) - 1)] ^= 1 << self.rng.randrange(8)
            elif op == 1 and out:  # overwrite with an interesting byte
                out[min(at, len(out) - 1)] = self.rng.choice(
                    [0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC2, 0xCC, 0xCF, 0xD3, 0xDB, 0xDD, 0xDF, 0xFF]
                )
            elif op == 2:  # insert random bytes
                out[at:at] = self.rng.randbytes(self.rng.randint(1, 8))
            elif op == 3:  # delete a range
                del out[at : at + self.rng.randint(1, 16)]
            elif op == 4:  # truncate
                del out[at:]
            elif op == 5:  # duplicate a range
                out[at:at] = out[at : at + self.rng.randint(1, 32)]
            else:  # splice with another envelope
                other = self.rng.choice(self.seeds)
                out[at:] = other[self.rng.randrange(len(other)) :]
        return bytes(out)

    def value(self, depth: int = 0) -> Any:
        """A random msgpack value of any kind (nested up to DEPTH_MAX)."""
        kinds: list[Callable[[], Any]] = [
            lambda: None, lambda: self.rng.random() < 0.5,
            lambda: self.rng.randint(-(2**63), 2**64 - 1), lambda: self.rng.randint(-5, 300),
            lambda: self.rng.uniform(-1e9, 1e9),
            lambda: "".join(self.rng.choices(string.printable, k=self.rng.randint(0, 40))),
            lambda: self.rng.randbytes(self.rng.randint(0, 80)),
            lambda: msgpack.ExtType(self.rng.randint(0, 127), self.rng.randbytes(4)),
            lambda: self.rng.choice(self.seeds),
        ]  # fmt: skip
        if depth < DEPTH_MAX:
            kinds += [
                lambda: [self.value(depth + 1) for _ in range(self.rng.randint(0, 6))],
                lambda: {self.key(k): self.value(depth + 1)
                         for k in range(self.rng.randint(0, 4))},
            ]  # fmt: skip
        return self.rng.choice(kinds)()

    def key(self, k: int) -> Any:
        """A map key: mostly a string, sometimes what msgpack allows and JSON does not."""
        return self.rng.choice([str(k), str(k), k, -k - 1, bytes([k]), None, k + 0.5])

    def envelope(self) -> Any:
        roll = self.rng.random()
        if roll < 0.55:
            return self.mutate(self.rng.choice(self.seeds))
        if roll < 0.7:
            return self.rng.choice(self.seeds)  # a replay of a valid envelope
        if roll < 0.85:
            return encode_loose(self.value())
        if roll < 0.95:
            return self.rng.randbytes(self.rng.randint(0, 200))
        return self.value()  # not even bytes

    def batch(self) -> bytes:
        items = [self.envelope() for _ in range(self.rng.randint(0, 6))]
        roll = self.rng.random()
        if roll < 0.7:
            return pack(items)
        if roll < 0.85:
            return self.mutate(pack(items))
        if roll < 0.95:
            return pack(self.value())
        return self.rng.randbytes(self.rng.randint(0, 300))


def pack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"
    return packed


def encode_loose(value: Any) -> bytes:
    """`value` the way a peer would send it: canonical encoding if it has one, else msgpack."""
    try:
        return encode(value)
    except Exception:  # noqa: BLE001 - a random value: any refusal means "not canonical"
        return pack(value)


def random_range(rng: random.Random) -> str:
    def one() -> str:
        return rng.choice([
            str(rng.randint(-5, 10)), str(rng.randint(0, 2**70)), "", "latest", "1e3", " 1",
            "0x10", "\u0661", "-0", str(rng.randint(1, 400)),
        ])  # fmt: skip

    params = [f"from={one()}", f"to={one()}"]
    return "&".join(rng.sample(params, rng.randint(0, 2)))


async def fuzz(clusters: ClusterFactory, tmp_path: Path, cases: int, seed: int) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4))
    await c.start_all()
    before = await c.wait_converged()
    rng = random.Random(seed)
    fuzzer = Fuzzer(rng, corpus(c))
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": "application/msgpack"}
    for case in range(cases):
        body = fuzzer.batch()
        async with c.http.post(c.api(TARGET) + "/peer/v1/messages", data=body,
                               headers=headers) as r:  # fmt: skip
            await r.read()
            statuses[r.status] += 1
            assert r.status in (204, 400, 413), f"seed {seed} case {case}: {r.status} {body!r}"
        if case % 10 == 0:
            async with c.http.get(f"{c.api(TARGET)}/peer/v1/blocks?{random_range(rng)}") as r:
                await r.read()
                statuses[r.status] += 1
                assert r.status in (200, 400), f"seed {seed} case {case}: blocks {r.status}"
    metrics = await c.metrics(TARGET)
    counted = (
        "cityledger_invalid_peer_messages_total{",
        'cityledger_replica_events_total{event="invalid_message',
    )
    dropped = sum(v for k, v in metrics.items() if k.startswith(counted))
    status, body = await c.submit(TARGET, make_tx(c.net, "fiscal/", "after-fuzz", {}, nonce=9))
    assert status == 200, f"the cluster no longer commits after the fuzz: {body}"
    head = await c.wait_converged()
    keys = [t.key for h in range(before["height"] + 1, head["height"] + 1)
            for t in (await c.block(TARGET, h))[0].txs]  # fmt: skip
    assert head["height"] == before["height"] + 1, (before["height"], head["height"], keys)
    code, _ = await c.get(TARGET, "/v1/records/fiscal/peer-fuzz")
    assert code == 404
    report(
        f"peer fuzz (seed {seed})",
        f"{cases} batches of random and mutated msgpack to /peer/v1/messages and "
        f"{cases // 10} random /peer/v1/blocks ranges: answers {dict(sorted(statuses.items()))}, "
        f"no 5xx; {dropped:.0f} envelopes dropped and counted; the node healthy and the "
        f"cluster committing on one head afterwards",
    )


async def test_random_and_mutated_msgpack_to_the_peer_endpoints(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    await fuzz(clusters, tmp_path, cases=5000, seed=SEED)


@pytest.mark.slow
async def test_peer_fuzz_soak(clusters: ClusterFactory, tmp_path: Path) -> None:
    await fuzz(clusters, tmp_path, cases=100_000, seed=SEED + 1)
