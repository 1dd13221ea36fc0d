"""A 4-node cluster in one event loop: commits from any node, view change, restart and catch-up."""

import asyncio
import shutil
from pathlib import Path

import aiohttp

from ledger import genesis as genesis_mod
from ledger.store import BlockStore
from ledger.verify import verify_chain
from tests.node.conftest import Cluster, start_cluster, stop_all, tx_json, within


async def submit(c: Cluster, http: aiohttp.ClientSession, node: int, name: str) -> tuple[int, int]:
    ns = ("fiscal/", "permits/", "claims/", "policies/")[node % 4]
    tx = c.tx(ns, name, {"from": node, "name": name})
    url = c.url(node) + "/v1/transactions?wait=true"
    async with http.post(url, json=tx_json(tx)) as r:
        body = await r.json()
        assert r.status == 200, body
    return body["height"], body["index"]


async def test_txs_submitted_to_any_node_commit_everywhere(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4)
    try:
        results = await within(
            asyncio.gather(
                *(submit(c, http, i, f"rec-{i}-{j}") for i in range(4) for j in range(5))
            )
        )
        top = max(h for h, _ in results)
        await c.wait_height(top)
        for i in range(4):  # every node holds every tx at the same place
            store = c.node(i).runtime.store
            assert all(store.block(h) is not None for h, _ in results)
        assert len({c.node(i).runtime.store.block(top).hash for i in range(4)}) == 1
    finally:
        await stop_all(c)


async def test_txs_survive_a_failed_primary(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4)
    try:
        await submit(c, http, 1, "before")
        primary = c.node(1).runtime.replica.primary
        await c.stop(primary)
        survivor = next(i for i in range(4) if i != primary)
        height, _ = await submit(c, http, survivor, "after")  # committed in a later view
        live = [i for i in range(4) if i != primary]
        await c.wait_height(height, live)
        assert all(c.node(i).runtime.replica.view > 0 for i in live)
        assert len({c.node(i).runtime.store.block(height).hash for i in live}) == 1
    finally:
        await stop_all(c)


async def test_restart_with_an_empty_data_dir_catches_up_and_verifies(tmp_path: Path, http) -> None:
    c = await start_cluster(tmp_path, 4)
    try:
        for j in range(3):
            await submit(c, http, 0, f"early-{j}")
        await c.stop(3)
        shutil.rmtree(tmp_path / "node3" / "data")
        for j in range(6):  # 3 of 4 still make a quorum
            await submit(c, http, j % 3, f"while-down-{j}")
        target = c.node(0).runtime.store.height
        await c.start(3, data_dir="fresh-data")
        await c.wait_height(target, [3])
        restarted = c.node(3).runtime.store
        assert restarted.block(target).hash == c.node(0).runtime.store.block(target).hash
        await c.stop(3)
        genesis = genesis_mod.load(tmp_path / "genesis.toml")
        with BlockStore.open(tmp_path / "node3" / "fresh-data", genesis) as store:
            report = verify_chain(store, genesis)
        assert report.ok, report.reason
        assert report.blocks_checked >= target
        await c.start(3, data_dir="fresh-data")  # and a plain restart recovers from its store
        assert c.node(3).runtime.store.height >= target
    finally:
        await stop_all(c)
