"""A tx whose time-to-live lapses in the pool gets an answer: its waiter and its status."""

from pathlib import Path

from tests.node.conftest import start_cluster, stop_all, tx_json, within
from tests.node.test_api import get, post

TTL_MS = 1000  # the least the genesis allows


async def test_a_pending_tx_that_outlives_its_ttl_answers_its_waiter_as_expired(
    tmp_path: Path, http
) -> None:
    c = await start_cluster(tmp_path, 4, {"tx_ttl_ms": TTL_MS}, wait_timeout_ms=30_000)
    try:
        await c.stop(3)
        await c.stop(2)  # no quorum: nothing commits, the tx can only expire
        tx = tx_json(c.tx("claims/", "late", {"v": 1}))
        status, body, _ = await within(post(http, c.url(1) + "/v1/transactions?wait=true", tx), 20)
        assert status == 202  # answered well before the 30 s wait ran out
        assert (body["status"], body["height"], body["index"]) == ("expired", None, None)
        status, found = await get(http, c.url(1) + f"/v1/transactions/{body['tx_id']}")
        assert (status, found["status"]) == (200, "expired")
        assert c.node(1).runtime.replica.counters["txs_expired"] >= 1
    finally:
        await stop_all(c)
