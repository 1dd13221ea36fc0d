"""What an operator sees of real node processes through faults: /readyz flips to 503 when a
quorum is lost and back to 200 when it returns, /v1/status says the same, and each operational
event (peer down and up, quorum lost and reachable, view change started and finished, catch-up
started and finished) is one INFO line, counted by one metric series.

The story: four nodes ready; node 3 stopped while 20 txs commit, restarted (it catches up);
the primary killed with a tx pending (the others change view); node 3 stopped again, leaving
nodes 1 and 2 without a quorum (503 `no_quorum`); nodes 0 and 3 started (200 everywhere).
Nodes 1 and 2 run throughout: their logs hold exactly the events the story causes.
"""

from collections import Counter
from pathlib import Path
from typing import Any, Final

from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import Cluster, loopback_network, make_tx

WITNESSES: Final = (1, 2)  # never stopped
READY_S: Final = 60.0


async def readiness(c: Cluster, i: int) -> tuple[int, dict[str, Any]]:
    try:
        code, body = await c.get(i, "/readyz")
    except (OSError, TimeoutError, ValueError):
        return 0, {}
    return code, body if isinstance(body, dict) else {}


async def wait_ready(c: Cluster, nodes: list[int], what: str) -> float:
    async def check() -> bool:
        codes = [(await readiness(c, i))[0] for i in nodes]
        return all(code == 200 for code in codes)

    return await c.wait_for(f"nodes {nodes} ready: {what}", check, READY_S)


async def wait_peer(c: Cluster, peer: int, *, up: bool) -> None:
    """Until every witness's /v1/status says `peer` is up (or down). A peer that comes back
    before anyone sent it a message was never seen down; a witness that has not heard a
    restarted peer yet would not count its next stop as a second one."""
    peer_id = c.net.nodes[peer].node_id

    async def seen() -> bool:
        got = (await c.statuses(list(WITNESSES))).values()
        return all(
            s is not None and any(p["id"] == peer_id and p["up"] is up for p in s["peers"])
            for s in got
        )

    state = "up" if up else "down"
    await c.wait_for(f"the witnesses see node {peer} {state}", seen, READY_S)


def events(c: Cluster, i: int) -> list[dict[str, Any]]:
    """Node `i`'s operational event lines (every run), with their level checked."""
    lines = [e for e in c.log_entries(i) if "event" in e]
    assert all(e["level"] == "info" for e in lines), [e for e in lines if e["level"] != "info"]
    return lines


def tally(lines: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["event"], str(e.get("peer", e.get("view", "")))) for e in lines)


async def test_readiness_follows_quorum_and_events_are_logged_once(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4))
    await c.start_all()
    await wait_ready(c, [0, 1, 2, 3], "all started")

    assert await c.stop(3) == 0
    for n in range(20):
        code, body = await c.submit(0, make_tx(c.net, "fiscal/", f"ops/{n}", {"n": n}, nonce=n))
        assert code == 200, body
    await wait_peer(c, 3, up=False)  # the witnesses saw it go before it comes back
    await c.start(3)
    await wait_ready(c, [0, 1, 2, 3], "node 3 caught up")
    await wait_peer(c, 3, up=True)  # and saw it back before it goes again

    status = await c.status(1)
    assert status is not None
    primary, view = status["primary"], status["view"]
    assert primary == 0, status  # view 0: nothing so far changed the view
    code, _ = await c.submit(1, make_tx(c.net, "permits/", "ops/vc", {}, nonce=1), wait=False)
    assert code == 202
    await c.kill(primary)

    async def new_view() -> bool:
        got = (await c.statuses([1, 2, 3])).values()
        return all(s is not None and s["view"] > view and s["ready"] for s in got)

    await c.wait_for("nodes 1, 2, 3 ready in a new view without node 0", new_view, READY_S)

    assert await c.stop(3) == 0
    lost_s = await c.wait_for(
        "nodes 1 and 2 not ready: no quorum",
        lambda: _both_not_ready(c, "no_quorum"), READY_S,
    )  # fmt: skip
    status = await c.status(1)
    assert status is not None
    assert (status["ready"], status["not_ready"]) == (False, "no_quorum")
    assert status["quorum"] == {"reachable": 2, "needed": 3}
    ids = [node.node_id for node in c.net.nodes]
    assert {p["id"]: p["up"] for p in status["peers"]} == {
        ids[0]: False, ids[2]: True, ids[3]: False,
    }  # fmt: skip
    assert status["running"] is True  # the process runs; it is not ready

    await c.start(0)
    await c.start(3)
    back_s = await wait_ready(c, [0, 1, 2, 3], "quorum back")

    for i in WITNESSES:
        lines = events(c, i)
        seen = tally(lines)
        story = [(e["event"], e.get("peer", e.get("view", "")), e.get("silent_ms")) for e in lines]
        assert seen[("quorum_lost", "")] == 1, story
        assert seen[("quorum_reachable", "")] == 2, story  # at start, and once back
        assert seen[("peer_down", ids[3])] == 2, story
        assert seen[("peer_down", ids[0])] == 1, story
        assert seen[("peer_up", ids[3])] == 3, story  # at start, and after each restart
        assert seen[("view_change_started", str(view + 1))] == 1, seen
        assert seen[("view_change_finished", str(view + 1))] == 1, seen
        metrics = await c.metrics(i)
        assert metrics["cityledger_quorum_losses_total"] == 1
        assert metrics[f'cityledger_peer_downs_total{{peer="{ids[3]}"}}'] == 2
        started = sum(n for (event, _), n in seen.items() if event == "view_change_started")
        assert metrics["cityledger_view_changes_total"] == started
    caught = [e for e in events(c, 3) if e["event"].startswith("catch_up")]
    assert [e["event"] for e in caught][:2] == ["catch_up_started", "catch_up_finished"], caught
    assert caught[1]["height"] >= 20
    report(
        "readiness and operational events, 4 real nodes",
        f"/readyz 503 no_quorum {lost_s:.1f} s after the quorum went, 200 again {back_s:.1f} s "
        f"after it returned; each event one INFO line on the witnesses; node 3 caught up "
        f"{caught[1]['blocks']} blocks in {caught[1]['duration_ms']} ms",
    )


async def _both_not_ready(c: Cluster, reason: str) -> bool:
    for i in WITNESSES:
        code, body = await readiness(c, i)
        if code != 503 or body.get("error") != reason:
            return False
    return True
