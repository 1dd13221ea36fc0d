"""Lagging and wiped nodes catch up from their peers by state transfer; the rate is reported.

- Stopped: a node is stopped (SIGTERM) while the other three commit hundreds of one-tx blocks
  by consensus (`block_txs_max = 1`, batches straight to the primary), then restarted.
- Wiped: the network starts on a chain of thousands of certified blocks (built once offline
  with the validators' keys, as if committed earlier, and copied into every data dir); one
  node's data dir is deleted while it is down; restarted empty, it fetches and verifies the
  whole chain while the others keep committing under load.
Either way it must end on the others' head with byte-identical blocks, and its store must pass
`cityledger verify`.
"""

import random
import shutil
import time
from pathlib import Path
from typing import Final

import pytest

from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import (
    Cluster,
    build_chain,
    loopback_network,
    make_tx,
    same_chain,
    verify_data_dirs,
)
from tests.faults.load import Load

BATCH_TXS: Final = 250
LAGGING: Final = 3  # the node that is stopped (never the primary of view 0)


async def commit_blocks(c: Cluster, count: int, nonce: int) -> float:
    """Have the live nodes commit `count` more one-tx blocks; blocks per second."""
    live = c.live()
    status = await c.status(live[0])
    assert status is not None
    base = status["height"]
    start = time.monotonic()
    for sent in range(0, count, BATCH_TXS):
        batch = [
            make_tx(c.net, "fiscal/", f"lag/{nonce + j}", {"seq": nonce + j}, nonce=nonce + j)
            for j in range(sent, min(sent + BATCH_TXS, count))
        ]
        # Stay at most one batch ahead of the chain: the mempool is bounded.
        await c.wait_height(base + sent - BATCH_TXS, live, timeout_s=120)
        body = {"transactions": [{"raw": t.raw.hex()} for t in batch]}
        url = c.api(status["primary"]) + "/v1/transactions"
        async with c.http.post(url, json=body, middlewares=c.signing) as r:
            assert r.status in (200, 202), await r.text()
    await c.wait_height(base + count, live, timeout_s=300)
    return count / (time.monotonic() - start)


async def restart_and_time(c: Cluster, target: int) -> float:
    """Start the lagging node; seconds until it holds `target` (its process start included)."""
    await c.start(LAGGING)
    return await c.wait_height(target, [LAGGING], timeout_s=600)


async def finish(c: Cluster, height: int) -> None:
    await same_chain(c, list(range(c.n)), height)
    for i in range(c.n):
        assert await c.stop(i) == 0
    await verify_data_dirs(c.net, [LAGGING])


async def stopped_node(clusters: ClusterFactory, root: Path, blocks: int) -> None:
    c = clusters(loopback_network(root, 4, params={"block_txs_max": 1}))
    await c.start_all()
    await commit_blocks(c, 20, 0)
    assert await c.stop(LAGGING) == 0
    produced = await commit_blocks(c, blocks, 1000)
    head = await c.wait_converged(c.live())
    took = await restart_and_time(c, head["height"])
    await finish(c, head["height"])
    report(
        f"catch-up of a stopped node, {blocks} blocks behind",
        f"{blocks} blocks fetched and verified in {took:.1f} s including process start: "
        f"{blocks / took:.0f} blocks/s (the 3 others committed them by consensus at "
        f"{produced:.0f} blocks/s)",
    )


async def wiped_node(clusters: ClusterFactory, root: Path, blocks: int) -> None:
    net = loopback_network(root, 4)
    build_chain(net, blocks, [spec.data for spec in net.nodes])
    c = clusters(net)
    await c.start_all()
    assert await c.stop(LAGGING) == 0
    shutil.rmtree(net.nodes[LAGGING].data)
    load = Load(c, random.Random(5), workers=2, targets=lambda: [0, 1, 2]).start()
    try:
        took = await restart_and_time(c, blocks)
    finally:
        await load.stop()
    head = await c.wait_converged(timeout_s=60)
    await finish(c, head["height"])
    report(
        f"catch-up of a wiped node, {blocks} blocks",
        f"{blocks} blocks fetched and verified from nothing in {took:.1f} s including process "
        f"start: {blocks / took:.0f} blocks/s, while the others committed "
        f"{head['height'] - blocks} more blocks under load; then on the same head",
    )


async def test_a_stopped_node_catches_up(clusters: ClusterFactory, tmp_path: Path) -> None:
    await stopped_node(clusters, tmp_path / "net", 500)


async def test_a_wiped_node_catches_up_from_nothing(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    await wiped_node(clusters, tmp_path / "net", 2000)


@pytest.mark.slow
async def test_catch_up_soak(clusters: ClusterFactory, tmp_path: Path) -> None:
    await stopped_node(clusters, tmp_path / "stopped", 5000)
    await wiped_node(clusters, tmp_path / "wiped", 30_000)
