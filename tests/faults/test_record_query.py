"""A query over 100,000 records, served by a real node process: `GET /v1/records` pages through
all of them (each once, in key order) while the node's memory stays bounded; and the CLI's
`cityledger query` and `cityledger events` against the same node.

The store is built directly (certified blocks of 1,000 txs, as a cluster would have committed
them: a real cluster would take minutes to commit 100,000 txs on this machine); one node
process then serves it.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Final

from ledger.block import ChainHead, make_block
from ledger.store import BlockStore
from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import (
    Cluster,
    Network,
    certify,
    loopback_network,
    make_tx,
    now_ms,
    run_command,
)

RECORDS: Final = 100_000
PER_BLOCK: Final = 1000
PAGE: Final = 1000
RSS_GROWTH_MAX_BYTES: Final = 96 * 1024 * 1024  # the node's memory while it serves every page
NAMESPACES: Final = ("fiscal/", "policies/civic-shield/")  # the fiscal clerk may not read those


def build(net: Network, into: Path) -> None:
    """`RECORDS` records in certified blocks, half in each namespace, written to `into`."""
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        blocks = RECORDS // PER_BLOCK
        start = now_ms() - 60_000
        head = ChainHead.genesis(net.genesis)
        with BlockStore.open(scratch / "data", net.genesis) as store:
            for h in range(1, blocks + 1):
                stamp = start + h * 5
                numbers = range((h - 1) * PER_BLOCK, h * PER_BLOCK)
                ns = NAMESPACES
                body = tuple(
                    make_tx(net, ns[n % 2], f"q/{n:06d}", {"n": n}, nonce=n, timestamp_ms=stamp - 1)
                    for n in numbers
                )
                block = make_block(head, body, stamp, 0, 0)
                store.append(block, certify(net, block))
                head = head.advance(block)
        shutil.copytree(scratch / "data", into)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def page_through(c: Cluster, pid: int) -> tuple[int, int, int, int]:
    """(records, pages, largest page in bytes, the node's RSS growth) over every page."""
    cursor, previous = "", ""
    records = pages = largest = 0
    base = peak = rss_bytes(pid)
    while True:
        query = f"/v1/records?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        code, body = await c.get(0, query, timeout_s=60)
        assert code == 200, body
        pages += 1
        largest = max(largest, len(json.dumps(body)))
        for record in body["records"]:
            assert record["key"] > previous, (record["key"], previous)  # in order, each once
            previous = record["key"]
        records += len(body["records"])
        peak = max(peak, rss_bytes(pid))
        if body["next_cursor"] is None:
            return records, pages, largest, peak - base
        cursor = body["next_cursor"]


async def test_a_query_pages_through_100000_records_with_bounded_memory(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    # The read thread's share of a core is 25% by default (so that reads never starve
    # consensus); this node does nothing else, and the test need not take four times as long.
    net = loopback_network(tmp_path / "net", 4, extra={"read_share_pct": 100})
    built = time.monotonic()
    build(net, net.nodes[0].data)
    built_s = time.monotonic() - built
    c = clusters(net)
    await c.start(0)  # reads need no quorum
    await c.wait_healthy([0])
    pid = c.procs[0].proc.pid

    started = time.monotonic()
    records, pages, largest, growth = await page_through(c, pid)
    paged_s = time.monotonic() - started
    assert records == RECORDS
    assert pages == RECORDS // PAGE  # a full last page says nothing follows: no empty page
    assert growth < RSS_GROWTH_MAX_BYTES, f"the node grew {growth / 2**20:.0f} MiB"

    code, body = await c.get(0, "/v1/records?prefix=policies/civic-shield/q/00001&limit=1000")
    assert code == 200
    expected = [f"policies/civic-shield/q/00001{d}" for d in "13579"]
    assert [r["key"] for r in body["records"]] == expected

    clerk = net.clients[net.client_for("fiscal/")]
    identity = ["--node", c.api(0), "--genesis", str(net.genesis_path), "--client",
                clerk.client_id, "--key", str(clerk.key_file)]  # fmt: skip
    code, out, err = await run_command("query", *identity, "--limit", "3", "--json")
    assert code == 0, err
    page = json.loads(out)
    assert [r["key"] for r in page["records"]] == [
        "fiscal/q/000000",
        "fiscal/q/000002",
        "fiscal/q/000004",
    ]  # its own namespace only
    code, out, err = await run_command("query", *identity, "--cursor", page["next_cursor"],
                                       "--limit", "1", "--json")  # fmt: skip
    assert code == 0, err
    assert [r["key"] for r in json.loads(out)["records"]] == ["fiscal/q/000006"]
    code, out, err = await run_command("query", *identity, "--prefix", "policies/civic-shield/")
    assert code == 1
    assert "may not read" in err
    code, out, err = await run_command("events", *identity, "--from", "2", "--until", "3",
                                       "--prefix", "fiscal/q/00150", "--json")  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event"], e["id"]) for e in lines] == [
        *[("tx", f"2:{i}") for i in range(500, 510, 2)],
        ("block", "2"),
        ("block", "3"),
    ]  # fiscal/q/001500 .. 001508 are txs 500 .. 508 of block 2; block 3 has none of them
    report(
        "query over 100,000 records, one real node",
        f"{records} records in {pages} pages of up to {PAGE} in {paged_s:.1f} s (largest "
        f"answer {largest / 1024:.0f} KiB); the node's RSS grew {growth / 2**20:.1f} MiB; "
        f"store built in {built_s:.1f} s",
    )
