"""Random fault schedules: a pure function from (seed, nodes, fault classes) to a `Plan`.

It owns which nodes are Byzantine and how, the network's odds during the fault phase, and the
timed crashes, restarts, partitions and network changes. The plan is drawn from its own
`random.Random` seeded by the seed alone, so it can be printed and read before the run, and is
the same whatever the simulator draws. At most f nodes are Byzantine; at most f honest nodes
are down at once (safety must hold regardless; liveness is only required after `heal_at_ms`).

The schedule scales with n: up to f Byzantine nodes, up to f honest nodes down at once, up to f
nodes partitioned away (or a split with no quorum on either side), filters towards any subset;
and the steps come faster as f grows (`step_gap_ms`), so that a larger cluster sees its larger
budget of faults used within the same fault phase.
"""

import dataclasses
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from tests.sim.byzantine import BYZANTINE_KINDS
from tests.sim.network import NetParams
from tests.sim.reconfig import Changes, Governor, plan_changes
from tests.sim.simulator import Simulator

FAULT_CLASSES: Final = (
    "loss", "duplicate", "reorder", "partition", "filter", "crash", "byzantine", "censor",
    "reconfig",
)  # fmt: skip
# `reconfig`: governance adds, removes and rotates validators and sets consensus parameters
# (tests/sim/reconfig.py), drawn from its own rng so that every other draw stays the same.
ALL: Final = FAULT_CLASSES  # what `--faults all` runs
# `filter` drops one kind of consensus message towards some nodes for a while: the precise,
# adversarial losses (e.g. Commits reach only one replica) that random loss rarely produces.
FILTERED_KINDS: Final = ("PrePrepare", "Prepare", "Commit", "Checkpoint", "ViewChange", "NewView")
FAULT_PHASE_MS: Final = 3_000
STEP_GAP_MS: Final = (150, 700)  # between two steps at n = 4 and 7; shorter for larger n
NODES_MIN: Final = 4  # n = 3f + 1 with f >= 1: fewer nodes tolerate no fault at all


@dataclass(frozen=True)
class Step:
    at_ms: int
    op: str  # crash | crash_mid | restart | partition | heal | network | filter | unfilter
    nodes: tuple[int, ...] = ()  # crash/restart: one node; partition: the cut-off side;
    # filter: the receivers
    net: NetParams | None = None
    kind: str = ""  # filter: the message kind dropped

    def describe(self) -> str:
        match self.op:
            case "partition":
                return f"{self.at_ms}ms partition {set(self.nodes)} away"
            case "network":
                assert self.net is not None
                return f"{self.at_ms}ms network {self.net.describe()}"
            case "heal":
                return f"{self.at_ms}ms heal partition"
            case "filter":
                return f"{self.at_ms}ms drop every {self.kind} to {set(self.nodes)}"
            case "unfilter":
                return f"{self.at_ms}ms stop dropping"
        return f"{self.at_ms}ms {self.op} n{self.nodes[0]}"


@dataclass(frozen=True)
class Plan:
    seed: int
    nodes: int
    faults: frozenset[str]
    byzantine: dict[int, str]
    net: NetParams
    steps: tuple[Step, ...]
    heal_at_ms: int = FAULT_PHASE_MS
    reconfig: Changes | None = None

    def describe(self) -> list[str]:
        byz = ", ".join(f"n{i}={k}" for i, k in sorted(self.byzantine.items())) or "none"
        return [
            f"seed={self.seed} nodes={self.nodes} faults={','.join(sorted(self.faults)) or 'none'}",
            f"byzantine: {byz}",
            f"network from 0ms: {self.net.describe()}",
            *(s.describe() for s in self.steps),
            *(self.reconfig.describe() if self.reconfig else []),
            f"{self.heal_at_ms}ms heal all (restart crashed, heal partition, calm network)",
        ]


def parse_faults(text: str) -> frozenset[str]:
    if text == "all":
        return frozenset(ALL)
    if text == "none":
        return frozenset()
    chosen = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = chosen - set(FAULT_CLASSES)
    if unknown:
        raise ValueError(f"unknown fault classes {sorted(unknown)}; known: {FAULT_CLASSES}")
    return chosen


def _net(rng: random.Random, faults: frozenset[str]) -> NetParams:
    return NetParams(
        loss=rng.choice((0.0, 0.05, 0.1, 0.2, 0.3)) if "loss" in faults else 0.0,
        duplicate=rng.choice((0.0, 0.05, 0.2)) if "duplicate" in faults else 0.0,
        delay_min_ms=1,
        delay_max_ms=rng.choice((5, 20, 60)) if "reorder" in faults else 10,
        spike=rng.choice((0.0, 0.02, 0.1)) if "reorder" in faults else 0.0,
    )


def step_gap_ms(f: int) -> tuple[int, int]:
    """The range of the gap between two steps: `STEP_GAP_MS` up to f = 2 (n = 4 and 7, whose
    recorded sweeps stay valid), divided by ceil(f / 2) above, so steps come about as often per
    tolerated fault at n = 10 and 13 as at n = 4 and 7."""
    share = max((f + 1) // 2, 1)
    return STEP_GAP_MS[0] // share, STEP_GAP_MS[1] // share


def make_plan(seed: int, nodes: int, faults: Iterable[str]) -> Plan:
    if nodes < NODES_MIN:
        raise ValueError(f"at least {NODES_MIN} nodes (n = 3f + 1, f >= 1), not {nodes}")
    chosen = frozenset(faults)
    rng = random.Random(f"cityledger-sim-plan/{seed}/{nodes}")
    f = (nodes - 1) // 3
    gap_ms = step_gap_ms(f)
    byzantine: dict[int, str] = {}
    if "byzantine" in chosen:
        who = rng.sample(range(nodes), rng.randint(0, f))
        if who and 0 not in who and rng.random() < 0.5:
            who[0] = 0  # the primary of view 0: equivocation needs a primary
        byzantine = {i: rng.choice(BYZANTINE_KINDS) for i in sorted(who)}
    if "censor" in chosen and len(byzantine) < f:
        # Its own rng, so that adding the family left every other draw of a plan as it was.
        censor_rng = random.Random(f"cityledger-sim-censor/{seed}/{nodes}")
        free = [i for i in range(nodes) if i not in byzantine]
        pick = 0 if 0 in free and censor_rng.random() < 0.5 else censor_rng.choice(free)
        byzantine[pick] = "censor"
    honest = [i for i in range(nodes) if i not in byzantine]
    steps: list[Step] = []
    down: list[int] = []
    cut = filtering = False
    at = rng.randint(*gap_ms)
    while at < FAULT_PHASE_MS:
        ops = []
        if "crash" in chosen:
            ops += ["restart"] * len(down) * 2
            ops += ["crash", "crash_mid"] if len(down) < f else []
        if "partition" in chosen:
            ops.append("heal" if cut else "partition")
        if chosen & {"loss", "duplicate", "reorder"}:
            ops.append("network")
        if "filter" in chosen:
            ops.append("unfilter" if filtering else "filter")
        if not ops:
            break
        op = rng.choice(ops)
        match op:
            case "crash" | "crash_mid":
                node = rng.choice([i for i in honest if i not in down])
                down.append(node)
                steps.append(Step(at, op, (node,)))
            case "restart":
                node = down.pop(rng.randrange(len(down)))
                steps.append(Step(at, op, (node,)))
            case "partition":
                side = rng.sample(range(nodes), rng.randint(1, max(f, 1)))
                if rng.random() < 0.25:  # a split with no quorum on either side
                    side = rng.sample(range(nodes), nodes // 2)
                steps.append(Step(at, op, tuple(sorted(side))))
                cut = True
            case "heal":
                steps.append(Step(at, op))
                cut = False
            case "network":
                steps.append(Step(at, op, net=_net(rng, chosen)))
            case "filter":
                to = rng.sample(range(nodes), rng.randint(1, nodes - 1))
                kind = rng.choice(FILTERED_KINDS)
                steps.append(Step(at, op, tuple(sorted(to)), kind=kind))
                filtering = True
            case "unfilter":
                steps.append(Step(at, op))
                filtering = False
        at += rng.randint(*gap_ms)
    changes = plan_changes(seed, nodes, byzantine) if "reconfig" in chosen else None
    return Plan(seed, nodes, chosen, byzantine, _net(rng, chosen), tuple(steps), reconfig=changes)


def schedule(sim: Simulator, plan: Plan) -> Governor | None:
    """Queue every step of `plan` on `sim` (whose clock is at 0); the governor that makes its
    changes of the set, if it has any."""
    for step in plan.steps:
        sim.at(step.at_ms, step.describe(), _apply(sim, step))
    if plan.reconfig is None:
        return None
    governor = Governor(sim, plan.reconfig)
    governor.start()
    return governor


def _apply(sim: Simulator, step: Step) -> Callable[[], None]:
    def run() -> None:
        match step.op:
            case "crash" | "crash_mid":
                victim = sim.node(step.nodes[0])
                if victim.up and not victim.crash_mid_handle:
                    sim.crash(victim.index, mid_handle=step.op == "crash_mid")
            case "restart":
                back = sim.node(step.nodes[0])
                if back.up:  # its mid-handle crash has not happened yet: it never will
                    back.cancel_crash()
                elif back.down:  # (not removed from the set, nor syncing)
                    sim.restart(back.index)
            case "partition":
                rest = [i for i in range(sim.n) if i not in step.nodes]
                sim.partition(step.nodes, rest)
            case "heal":
                sim.heal()
            case "network":
                assert step.net is not None
                sim.set_network(**dataclasses.asdict(step.net))
            case "filter":
                receivers, kind = frozenset(step.nodes), step.kind
                sim.drop_messages(
                    lambda _sender, to, msg: to in receivers and type(msg).__name__ == kind,
                    f"(every {kind} to {sorted(receivers)})",
                )
            case "unfilter":
                sim.drop_messages(None)

    return run
