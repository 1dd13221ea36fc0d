"""A primary that marks an outcome wrongly, among real processes: node 0 (the primary of view
0) runs the test-only launcher tests/faults/byzantine.py with `--behaviours misoutcome`: each
block it proposes carries one tx's outcome flipped under a matching outcome root. The honest
nodes must recompute the outcomes, refuse its blocks, change view, and commit under the next
primary, every honest node with the same chain.
"""

import random
import sys
from pathlib import Path
from typing import Final

from tests.faults.conftest import ClusterFactory
from tests.faults.figures import report
from tests.faults.harness import loopback_network, same_chain
from tests.faults.load import Load

HONEST: Final = [1, 2, 3]
LIAR: Final = 0
SEED: Final = 47


async def test_a_primary_marking_an_outcome_wrongly_is_refused_and_replaced(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4, log_level="debug"))
    c.commands[LIAR] = [
        sys.executable, "-m", "tests.faults.byzantine", str(c.net.nodes[LIAR].config),
        "--seed", str(SEED), "--behaviours", "misoutcome",
    ]  # fmt: skip
    await c.start_all()
    load = Load(c, random.Random(SEED), workers=4, targets=lambda: HONEST)
    load.start()
    try:
        await c.wait_for("commits", lambda: len(load.acked) >= 20, 60)
    finally:
        await load.stop()
    head = await c.wait_converged(HONEST, timeout_s=60)
    await same_chain(c, HONEST, head["height"])
    refused = await c.replica_events(HONEST, "invalid_message:invalid_block")
    liar = [e for e in c.log_entries(LIAR) if e.get("logger") == "cityledger.byzantine"]
    mismarked = sum(1 for e in liar if e.get("msg") == "mismarking")
    assert mismarked > 0, "the liar never proposed a mismarked block"
    assert refused > 0, "no honest node refused a mismarked block"
    assert head["view"] >= 1, "the honest nodes never left the liar's view"
    report(
        "primary marking outcomes wrongly, node 0",
        f"it proposed {mismarked} blocks with a flipped outcome; the honest nodes refused "
        f"{refused:.0f} of them as invalid, changed view (view {head['view']} at the end) "
        f"and committed {len(load.acked)} acknowledged txs",
    )
