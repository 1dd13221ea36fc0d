"""A Byzantine validator among real processes: node 0 (the primary of view 0) runs the test-only
launcher tests/faults/byzantine.py, which equivocates as primary, replays old messages, sends
forged signatures and garbage, and serves forged blocks for state transfer. The three honest
nodes must stay consistent (byte-identical chains, `cityledger verify` passes) and keep
committing, including a node that is stopped and must catch up past the forger.
"""

import random
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import Cluster, loopback_network, same_chain, verify_data_dirs
from tests.faults.load import Load

HONEST: Final = [1, 2, 3]
BYZANTINE: Final = 0


def byzantine_command(config: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "tests.faults.byzantine", str(config), "--seed", str(seed)]


async def counted(c: Cluster, prefix: str) -> float:
    """The sum over the honest nodes of every metric sample starting with `prefix`."""
    total = 0.0
    for i in HONEST:
        total += sum(v for k, v in (await c.metrics(i)).items() if k.startswith(prefix))
    return total


async def byzantine_run(clusters: ClusterFactory, root: Path, *, acks: int, seed: int) -> None:
    c = clusters(loopback_network(root, 4, log_level="debug"))
    c.commands[BYZANTINE] = byzantine_command(c.net.nodes[BYZANTINE].config, seed)
    await c.start_all()
    load = Load(c, random.Random(seed), workers=4, targets=lambda: [i for i in HONEST
                                                                   if i in c.live()])  # fmt: skip
    load.start()
    try:
        await c.wait_for(
            f"{acks} commits with a Byzantine primary", lambda: len(load.acked) >= acks, 120
        )
        assert await c.stop(3) == 0
        await c.wait_for(f"{acks} more commits with node 3 down",
                         lambda: len(load.acked) >= 2 * acks, 120)  # fmt: skip
        await c.start(3)
        status = await c.status(1)
        assert status is not None
        caught = await c.wait_height(status["height"], [3], timeout_s=120)
        await c.wait_for(f"{acks} more commits with node 3 back",
                         lambda: len(load.acked) >= 3 * acks, 120)  # fmt: skip
    finally:
        await load.stop()
    head = await c.wait_converged(HONEST, timeout_s=60)
    await same_chain(c, HONEST, head["height"])
    bad_sigs = await counted(
        c, 'cityledger_replica_events_total{event="invalid_message:bad_signature"'
    )
    malformed = await counted(c, "cityledger_invalid_peer_messages_total")
    equivocations = await counted(c, 'cityledger_replica_events_total{event="equivocation"')
    fetch_invalid = await counted(c, 'cityledger_replica_events_total{event="fetch_invalid"')
    # Each block an honest node refused is one INFO line and one count (nodes 1 and 2 ran
    # throughout: their logs and their counters cover the same run).
    refused_lines = refused_counts = 0.0
    for i in (1, 2):
        refused_lines += sum(1 for e in c.log_entries(i) if e.get("event") == "block_refused")
        refused_counts += sum(v for k, v in (await c.metrics(i)).items()
                              if k.startswith("cityledger_blocks_refused_total"))  # fmt: skip
    for i in HONEST:  # the txs it relayed with forged client signatures were never admitted
        code, _ = await c.get(i, "/v1/records/fiscal/forged")
        assert code == 404
    view = head["view"]
    liar = [e for e in c.log_entries(BYZANTINE) if e.get("logger") == "cityledger.byzantine"]
    equivocated = sum(1 for e in liar if e.get("msg") == "equivocating")
    fired = {str(e.get("what")) for e in liar if e.get("msg") == "byzantine action"}
    for i in HONEST:
        assert await c.stop(i) == 0
    await verify_data_dirs(c.net, HONEST)
    # Each of its faults fired, and the honest nodes saw the kinds that reached them.
    assert equivocated > 0, "the Byzantine primary never equivocated"
    missing = {"equivocating pre-prepare", "replayed", "forged: flipped signature",
               "forged: random bytes", "forged: forged client signature"} - fired  # fmt: skip
    assert not missing, f"these faults never fired: {sorted(missing)} (fired: {sorted(fired)})"
    assert bad_sigs > 0, "no forged signature was seen (and dropped)"
    assert malformed > 0, "no malformed envelope was seen (and dropped)"
    assert refused_lines == refused_counts
    if equivocations > 0:
        assert refused_lines > 0, "conflicting pre-prepares were seen, and no refusal logged"
    if any(kind.startswith("served forged block") for kind in fired):
        assert fetch_invalid > 0, "forged blocks were served, and no honest node refused one"
    report(
        f"byzantine node 0, {3 * acks} acknowledged commits",
        f"honest nodes on one chain (head {head['height']}, view {view}), verify OK; node 3 "
        f"stopped and caught up in {caught:.1f} s; the liar equivocated at {equivocated} "
        f"heights; honest nodes dropped {bad_sigs:.0f} bad signatures, {malformed:.0f} "
        f"malformed envelopes and every tx it relayed with a forged client signature, saw "
        f"{equivocations:.0f} conflicting pre-prepares and refused {fetch_invalid:.0f} forged "
        f"block-sync answers",
    )


async def test_honest_nodes_stay_consistent_and_live_with_a_byzantine_primary(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    await byzantine_run(clusters, tmp_path / "net", acks=40, seed=41)


@pytest.mark.slow
async def test_byzantine_soak(clusters: ClusterFactory, tmp_path: Path) -> None:
    await byzantine_run(clusters, tmp_path / "net", acks=1000, seed=42)
