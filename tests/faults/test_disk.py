"""Disk faults: a corrupted LevelDB value or a truncated data dir is detected at start with a
clear message, and a damaged block is never served as a valid one.

Each case starts from a real store (a certified chain written by the ledger), damages it as a
disk or an operator can, and runs real `cityledger node run` processes on it:

- the head block (other txs under the same header) or its certificate (a flipped vote bit)
  altered: the node refuses to start, in one line naming the store and the damage;
- a block below the head altered (start-up reads O(log n) entries, not the whole chain): the
  node starts, but serves that block as `store_error` (5xx naming the height), never as valid;
  a wiped peer catching up takes the block from an honest peer (a damaged answer is refused);
  `cityledger verify --data-dir` names the first bad height;
- LevelDB's own files: a truncated MANIFEST and a deleted write-ahead log are refused at start;
  bit flips in a table file are refused at start or served only as errors; a torn log tail
  (what a crash in mid-write leaves) rolls the store back to its last intact block, and the
  node fetches the rest from its peers.
"""

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgpack
import plyvel

from ledger.block import Block, check_body, decode_block, decode_certificate, verify_certificate
from ledger.encoding import decode, encode
from ledger.errors import InvalidBlock
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import (
    Cluster,
    Network,
    build_chain,
    loopback_network,
    make_tx,
    run_command,
    same_chain,
)

BLOCKS: Final = 300
DAMAGED_BLOCK: Final = 120  # heights below the head whose block / certificate is altered
DAMAGED_CERT: Final = 200
MSGPACK_ACCEPT: Final = {"Accept": "application/msgpack"}
FLIPS: Final = 24  # bytes flipped in a table file


def block_key(height: int) -> bytes:
    return b"B" + height.to_bytes(8, "big")


def cert_key(height: int) -> bytes:
    return b"C" + height.to_bytes(8, "big")


def alter(data: Path, key: bytes, change: Callable[[bytes], bytes]) -> None:
    db = plyvel.DB(str(data))
    try:
        value = db.get(key)
        assert value is not None, key
        db.put(key, change(value), sync=True)
    finally:
        db.close()


def other_txs(net: Network) -> Callable[[bytes], bytes]:
    """The same header over other valid, signed txs: still decodes, and hashes the same."""

    def change(raw: bytes) -> bytes:
        block = decode_block(raw)
        tx = make_tx(net, "permits/", "swapped", {"swapped": True}, nonce=10**9,
                     timestamp_ms=block.header.timestamp_ms - 1)  # fmt: skip
        return Block(block.header, (tx,), block.hash).encode()

    return change


def flip_vote(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 0x01])  # the last byte of the last vote's signature


async def refused_at_start(net: Network, i: int) -> str:
    """Run node `i` on its damaged store: it must exit 1 with one clear line, no traceback."""
    code, out, err = await run_command("node", "run", str(net.nodes[i].config), timeout_s=60)
    assert code == 1, (code, out, err[-2000:])
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("Error: "), line
    assert str(net.nodes[i].data) in line, line
    return line.removeprefix("Error: ")


def block_bytes(view: dict[str, Any]) -> bytes:
    """A block's bytes from its msgpack API view (header, tx and outcome codes as served)."""
    codes = [o["reason"] or "" for o in view["outcomes"]]
    return encode([decode(view["header"]["raw"], 512), [t["raw"] for t in view["txs"]], codes])


async def served_blocks(
    c: Cluster, i: int, height: int, *, missing_ok: bool = False
) -> tuple[int, list[int]]:
    """Ask node `i` for blocks 1..height through the client API: (how many came back as valid
    blocks, the heights refused as store_error). A block that does not verify must never come
    back with a 200; with `missing_ok` (LevelDB's files damaged) a 404 counts as refused too:
    a damaged key loses its entry."""
    valid, refused = 0, []
    for h in range(1, height + 1):
        url = f"{c.api(i)}/v1/blocks/{h}"
        async with c.http.get(url, headers=MSGPACK_ACCEPT, middlewares=c.signing) as r:
            body = msgpack.unpackb(await r.read(), raw=False)
            status = r.status
        if status >= 500 or (missing_ok and status == 404):
            assert body["error"] in ("store_error", "not_found"), body
            # A damaged value is named by its height; LevelDB's own errors name the key.
            assert missing_ok or f"block {h} " in body["reason"], body
            refused.append(h)
            continue
        assert status == 200, (h, status, body)
        block = decode_block(block_bytes(body))
        try:
            check_body(block)
            verify_certificate(decode_certificate(body["certificate"]["raw"]), block,
                               c.net.genesis)  # fmt: skip
        except InvalidBlock as exc:
            raise AssertionError(f"node {i} served a damaged block {h} as valid: {exc}") from None
        valid += 1
    return valid, refused


async def test_a_damaged_head_is_refused_at_start(tmp_path: Path) -> None:
    net = loopback_network(tmp_path / "net", 4)
    build_chain(net, BLOCKS, [net.nodes[0].data, net.nodes[1].data])
    alter(net.nodes[0].data, block_key(BLOCKS), other_txs(net))
    alter(net.nodes[1].data, cert_key(BLOCKS), flip_vote)
    block_line = await refused_at_start(net, 0)
    cert_line = await refused_at_start(net, 1)
    assert f"head block {BLOCKS} is damaged" in block_line
    assert "tx root" in block_line
    assert f"head block {BLOCKS} is damaged" in cert_line
    assert "signature" in cert_line
    report("disk: damaged head block / certificate", f"refused at start: {block_line!r}; "
           f"{cert_line!r}")  # fmt: skip


async def test_damage_below_the_head_is_never_served_and_a_torn_log_is_refetched(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    net = loopback_network(tmp_path / "net", 4)
    build_chain(net, BLOCKS, [spec.data for spec in net.nodes])
    alter(net.nodes[0].data, block_key(DAMAGED_BLOCK), other_txs(net))
    alter(net.nodes[0].data, cert_key(DAMAGED_CERT), flip_vote)
    for path in net.nodes[1].data.iterdir():  # node 1 wiped: it must fetch everything
        path.unlink()
    net.nodes[1].data.rmdir()
    log = next(net.nodes[3].data.glob("*.log"))  # node 3: the log's tail torn off
    with log.open("r+b") as file:
        file.truncate(log.stat().st_size * 2 // 3)
    c = clusters(net)
    await c.start_all()
    torn = await c.status(3)
    assert torn is not None
    assert 0 < torn["height"] < BLOCKS, torn
    valid, refused = await served_blocks(c, 0, BLOCKS)
    assert refused == [DAMAGED_BLOCK, DAMAGED_CERT], refused
    await c.wait_height(BLOCKS, [1, 3], timeout_s=120)
    await same_chain(c, [1, 2, 3], BLOCKS)
    for i in range(c.n):
        assert await c.stop(i) == 0
    code, out, _ = await run_command(
        "verify", "--data-dir", str(net.nodes[0].data), "--genesis", str(net.genesis_path)
    )
    assert code == 1, out
    assert f"height {DAMAGED_BLOCK}" in out, out
    report(
        "disk: damage below the head, torn log tail",
        f"node 0 served {valid} blocks as valid and refused blocks {refused} as store_error; "
        f"`verify --data-dir`: {out.strip().splitlines()[0]!r}; a wiped node fetched all "
        f"{BLOCKS} blocks from its peers; a node whose log lost its last third restarted at "
        f"height {torn['height']} and fetched the rest",
    )


async def test_damaged_leveldb_files_are_refused_or_never_served(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    net = loopback_network(tmp_path / "net", 4)
    build_chain(net, BLOCKS, [net.nodes[i].data for i in (0, 1, 2)])
    manifest = next(net.nodes[0].data.glob("MANIFEST-*"))
    with manifest.open("r+b") as file:
        file.truncate(manifest.stat().st_size // 2)
    next(net.nodes[1].data.glob("*.log")).unlink()
    manifest_line = await refused_at_start(net, 0)
    log_line = await refused_at_start(net, 1)
    assert "cannot open block store" in manifest_line
    assert "Corruption" in manifest_line
    assert "no meta record" in log_line
    db = plyvel.DB(str(net.nodes[2].data))  # node 2: blocks in table files, then bit flips
    db.compact_range()
    db.close()
    table = max(net.nodes[2].data.glob("*.ldb"), key=lambda p: p.stat().st_size)
    data = bytearray(table.read_bytes())
    rng = random.Random(61)
    for offset in sorted(rng.sample(range(len(data) * 9 // 10), FLIPS)):  # not the footer
        data[offset] ^= 1 << rng.randrange(8)
    table.write_bytes(bytes(data))
    c = clusters(net)
    outcome = await start_or_refusal(c, 2)
    if outcome is None:
        valid, refused = await served_blocks(c, 2, BLOCKS, missing_ok=True)
        assert refused, "no damaged block found after the bit flips"
        assert await c.stop(2) == 0
        outcome = f"started; served {valid} blocks as valid, refused {len(refused)} as errors"
    code, out, _ = await run_command(
        "verify", "--data-dir", str(net.nodes[2].data), "--genesis", str(net.genesis_path)
    )
    assert code == 1, out
    report(
        "disk: damaged LevelDB files",
        f"truncated MANIFEST refused: {manifest_line!r}; deleted log refused: {log_line!r}; "
        f"{FLIPS} bit flips in a table file: {outcome}; `verify --data-dir`: "
        f"{out.strip().splitlines()[0]!r}",
    )


async def start_or_refusal(c: Cluster, i: int) -> str | None:
    """Start node `i`: None once it is healthy, or its refusal line if it exits first."""
    await c.start(i)
    try:
        await c.wait_healthy([i], timeout_s=60)
    except AssertionError:
        code = await c.exited(i)
        assert code == 1, code
        lines = [ln for ln in c.log_file(i).read_text().splitlines() if ln.startswith("Error: ")]
        assert lines, c.log_file(i).read_text()[-2000:]
        assert str(c.net.nodes[i].data) in lines[-1], lines
        return f"refused at start: {lines[-1]!r}"
    return None
