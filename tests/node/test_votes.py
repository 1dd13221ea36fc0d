"""`GET /v1/votes`: the votes and view changes each validator made, as this node saw them.

Against four real nodes: a height whose certificate kept three votes shows the fourth
validator's vote too (seen, verified, not kept); a stopped validator's votes are missed from
the heights committed without it. The log itself: a forged vote never counts, a view change
counts once per higher view, every table stays bounded. Nothing sleeps: waits poll the answer.
"""

import asyncio
from typing import Any

import aiohttp

from consensus import messages as m
from ledger import crypto
from ledger.block import commit_payload
from node import votes
from tests import factory
from tests.node.conftest import WAIT_S, Cluster, now_ms, tx_json
from tests.node.test_api import get

POLL_S = 0.05


async def commit_one(c: Cluster, http: aiohttp.ClientSession, node: int, name: str) -> int:
    tx = c.tx("fiscal/", name, {"n": name}, timestamp_ms=now_ms())
    async with http.post(c.url(node) + "/v1/transactions?wait=true", json=tx_json(tx)) as r:
        body = await r.json()
    assert r.status == 200, body
    height: int = body["height"]
    return height


async def page_until(http: aiohttp.ClientSession, url: str, holds: Any) -> dict[str, Any]:
    """Poll `url` until `holds(answer)`, within WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        status, page = await get(http, url)
        assert status == 200, page
        if holds(page):
            return dict(page)
        assert asyncio.get_running_loop().time() < deadline, f"never held: {page}"
        await asyncio.sleep(POLL_S)


async def test_votes_beyond_the_certificate_and_missed_votes(cluster: Cluster, http) -> None:
    c = cluster
    ids = [v.id for v in c.genesis.validators]
    first = await commit_one(c, http, 0, "votes-1")
    url = c.url(1) + f"/v1/votes?from={first}&limit=1"
    page = await page_until(http, url, lambda p: len(p["heights"][0]["voters"]) == 4)
    row = page["heights"][0]
    assert row["seen"] is True
    assert len(row["signers"]) >= c.genesis.quorums.commit
    assert set(row["signers"]) <= set(row["voters"]) == set(ids)
    kept = {v["id"]: v for v in page["validators"]}
    assert all(kept[i]["missed"] == 0 and kept[i]["last_vote"] == first for i in ids)
    assert sum(v["not_kept"] for v in page["validators"]) == 4 - len(row["signers"])

    await c.stop(3)  # its votes are missed from now on, as node 1 sees it
    later = await commit_one(c, http, 0, "votes-2")  # on node 0; node 1 may write it later
    page = await page_until(http, c.url(1) + f"/v1/votes?from={first}", lambda p: p["to"] >= later)
    assert page["next_from"] is None
    gone = next(v for v in page["validators"] if v["id"] == ids[3])
    assert gone["last_vote"] == first
    assert gone["missed"] >= 1
    assert all(ids[3] not in r["voters"] for r in page["heights"] if r["height"] > first)


async def test_bad_pages_are_refused(cluster: Cluster, http, anonymous) -> None:
    c = cluster
    height = await commit_one(c, http, 0, "votes-bad")
    for bad in ("?from=0", f"?from={height + 1}", "?limit=0",
                f"?limit={votes.VOTES_PAGE_MAX + 1}", "?from=x"):  # fmt: skip
        status, refused = await get(http, c.url(0) + "/v1/votes" + bad)
        assert (status, refused["error"]) == (400, "malformed"), bad
    status, _ = await get(anonymous, c.url(0) + "/v1/votes")
    assert status == 401
    status, page = await get(http, c.url(0) + f"/v1/votes?from=1&limit={height}")
    assert status == 200
    assert [r["height"] for r in page["heights"]] == list(range(1, height + 1))


def _commit(
    net: factory.Network, sender: int, height: int, block_hash: bytes, view: int = 0
) -> m.Commit:
    payload = commit_payload(net.genesis.chain_id, view, height, block_hash)
    signature = crypto.sign(net.validator_keys[sender], crypto.Domain.COMMIT, payload)
    return m.Commit(view, height, block_hash, sender, signature)


def test_the_log_verifies_votes_counts_view_changes_and_stays_bounded() -> None:
    net = factory.network(4)
    head = [10]
    log = votes.VoteLog(net.genesis, 0, lambda: head[0])
    good, other = b"\x01" * 32, b"\x02" * 32
    log.saw(_commit(net, 1, 11, good))
    log.saw(_commit(net, 2, 11, other))  # a vote for another block than the committed one
    forged = _commit(net, 3, 11, good)
    log.saw(m.Commit(forged.view, 11, good, 3, bytes(64)))  # not its signature
    assert log.voters(11, good) == {1}
    for view in (1, 1, 3, 2):  # one count per higher view
        log.saw(m.ViewChange(view, 0, b"\x00" * 32, None, (), 2))
    # Forged votes in another's name cannot take the places of its real one.
    for view in range(1, 1 + votes.VOTES_PER_SENDER_MAX):
        log.saw(m.Commit(view, 11, good, 3, bytes(64)))
    log.saw(_commit(net, 3, 11, good, view=9))
    assert log.voters(11, good) == {1, 3}
    assert log._views["node2"].count == 2  # by id: an index names one validator per epoch
    assert log._views["node2"].last_view == 3
    # Heights far from the head are not taken; old ones are dropped as the head moves on.
    log.saw(_commit(net, 1, head[0] + votes.VOTE_HEIGHTS_AHEAD + 1, good))
    log.saw(_commit(net, 1, head[0] - votes.VOTE_HEIGHTS_KEPT, good))
    assert set(log._votes) == {11}
    for view in range(1, 3 + votes.VOTES_PER_SENDER_MAX):  # valid ones, beyond the cap
        log.saw(_commit(net, 1, 11, good, view=view))
    assert len(log._votes[11][1]) == votes.VOTES_PER_SENDER_MAX
    vote = _commit(net, 1, 12, good)
    bound = votes.VOTE_HEIGHTS_KEPT + votes.VOTE_HEIGHTS_AHEAD + votes.PRUNE_HEIGHTS
    for height in range(12, 12 + 2 * bound):
        head[0] = height
        log.saw(m.Commit(0, height, good, 1, vote.signature))  # the count of heights only
        assert len(log._votes) <= bound
    assert min(log._votes) > head[0] - bound
