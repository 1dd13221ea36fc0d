"""A censoring primary among real processes: node 0 (the primary of view 0) runs the test-only
launcher tests/faults/byzantine.py with `--behaviours censor`: it never admits the txs of one
client that the others relay to it, so it proposes every client's txs but that one's. The
honest nodes must see blocks with room commit without the victim's txs, change view, and
commit the victim's txs under the next primary.
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
CENSOR: Final = 0
SEED: Final = 43


async def test_a_censoring_primary_is_replaced_and_the_censored_client_committed(
    clusters: ClusterFactory, tmp_path: Path
) -> None:
    c = clusters(loopback_network(tmp_path / "net", 4, log_level="debug"))
    victim = c.net.client_for("fiscal/")  # a client the load signs for
    c.commands[CENSOR] = [
        sys.executable, "-m", "tests.faults.byzantine", str(c.net.nodes[CENSOR].config),
        "--seed", str(SEED), "--behaviours", "censor", "--victim", victim,
    ]  # fmt: skip
    await c.start_all()
    load = Load(c, random.Random(SEED), workers=4, targets=lambda: HONEST)
    load.start()

    def victim_acked() -> int:
        return sum(1 for ack in load.acked.values() if ack.client == victim)

    try:
        await c.wait_for("a tx of the censored client committed", lambda: victim_acked() > 0, 60)
        acked_before = len(load.acked)
        await c.wait_for("more commits after", lambda: len(load.acked) >= acked_before + 20, 60)
    finally:
        await load.stop()
    head = await c.wait_converged(HONEST, timeout_s=60)
    await same_chain(c, HONEST, head["height"])
    censorship = await c.replica_events(HONEST, "censorship_view_changes")
    liar = [e for e in c.log_entries(CENSOR) if e.get("logger") == "cityledger.byzantine"]
    censored = sum(e.get("txs", 0) for e in liar if e.get("msg") == "censoring")
    assert censored > 0, "the censor never kept a tx of its victim out"
    assert head["view"] >= 1, "the honest nodes never left the censor's view"
    assert censorship > 0, "no honest node changed view for censorship"
    report(
        "censoring primary, node 0",
        f"it kept {censored} relayed txs of {victim} out; the honest nodes changed view "
        f"{censorship:.0f} times for censorship (view {head['view']} at the end) and committed "
        f"{victim_acked()} of that client's txs among {len(load.acked)} acknowledged",
    )
