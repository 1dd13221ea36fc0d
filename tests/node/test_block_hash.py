"""`GET /v1/blocks/{block_hash}`: a block found by its hash over the whole chain, through the
store's hash index, including one older than the 256 blocks the explorer once scanned."""

import aiohttp

from tests.node.conftest import Cluster, now_ms, tx_json

BLOCKS = 260  # more than the 256 recent blocks a scan used to cover
OLD_SCAN_BLOCKS = 256


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as r:
        return r.status, await r.json()


async def test_a_block_older_than_256_is_found_by_its_hash(single: Cluster, http) -> None:
    c = single
    for i in range(BLOCKS):  # one tx, waited for, per block
        tx = c.tx("fiscal/", f"hash-{i}", {"n": i}, timestamp_ms=now_ms())
        async with http.post(c.url(0) + "/v1/transactions?wait=true", json=tx_json(tx)) as r:
            assert r.status == 200, await r.text()
    head = c.node(0).runtime.store.height
    assert head - 1 > OLD_SCAN_BLOCKS
    status, first = await get(http, c.url(0) + "/v1/blocks/1")
    assert status == 200
    status, found = await get(http, c.url(0) + f"/v1/blocks/{first['hash']}")
    assert (status, found["height"], found["hash"]) == (200, 1, first["hash"])
    status, refused = await get(http, c.url(0) + "/v1/blocks/" + "ab" * 32)
    assert (status, refused["error"]) == (404, "not_found")
    for bad in ("zz" * 32, "ab" * 31, "ab" * 33):
        status, refused = await get(http, c.url(0) + "/v1/blocks/" + bad)
        assert (status, refused["error"]) == (400, "malformed"), bad
