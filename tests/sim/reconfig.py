"""The `reconfig` fault family: governance changes the validator set and the consensus
parameters on the chain while the other faults run (docs/protocol.md 13.5 and 20.8).

`plan_changes` draws, from its own `random.Random` (so the other families' draws stay what
they were), one to `CHANGES_MAX` changes: add a validator, remove one (any, not only the
last), rotate a validator's key, set consensus parameters; the set stays between `SIZE_MIN`
and `SIZE_MAX` validators and never holds more Byzantine ones than it tolerates. `Governor`
enacts them one after the other with real txs signed by the genesis admins (a proposal, then
the approvals of two other organisations: three of four), offered again to every honest node
that is up until they commit, and carries out what each change means for the nodes: a
joining node is started at its proposal (it syncs before it counts, tests/sim/members.py), a
removed one is stopped once its store is past the boundary (or at once if it is down, or once
it is plainly stranded short of it: `STRANDED_MS`), a
rotated one restarts on its new key. A change whose tx is refused is reported and skipped.
"""

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ledger import crypto
from ledger.gov import epochs
from ledger.gov.config import Config
from ledger.gov.history import config_of
from ledger.gov.machine import APPROVAL_TYPE, APPROVALS, PROPOSAL_TYPE, PROPOSALS
from ledger.tx import Transaction
from tests import factory
from tests.sim.checker import Violation
from tests.sim.node import SimNode

if TYPE_CHECKING:
    from tests.sim.simulator import Simulator

SIZE_MIN: Final = 4
SIZE_MAX: Final = 7
CHANGES_MAX: Final = 3
START_MS: Final = (0, 1_500)  # when the first proposal is made
TICK_MS: Final = 150  # how often the governor looks at the chain and offers its txs again
# A removed node still short of its removal this long after it took effect and the network
# healed was cut off when it happened: the set in force no longer speaks to it nor serves it
# blocks (docs/protocol.md 13.6), so it never learns. Its operator stops it, as the runbook
# says (docs/operations.md, "Retire a node").
STRANDED_MS: Final = 20_000
PROPOSER: Final = "fiscal-admin0"
APPROVERS: Final = ("permits-admin0", "claims-admin0")  # with the proposer: 3 of 4 organisations
PARAMS: Final = {
    "consensus.block_txs_max": (5, 50, 500),
    "consensus.checkpoint_interval": (2, 4, 8),
    "consensus.block_interval_ms": (0, 20, 50),
}


@dataclass(frozen=True)
class Change:
    kind: str  # add | remove | rotate | params
    node: int = -1  # remove, rotate: the node number of the validator
    param: str = ""
    value: int = 0

    def describe(self) -> str:
        match self.kind:
            case "add":
                return "add a validator"
            case "params":
                return f"set {self.param} = {self.value}"
        return f"{self.kind} n{self.node}"


@dataclass(frozen=True)
class Changes:
    start_ms: int
    changes: tuple[Change, ...]

    def describe(self) -> list[str]:
        return [f"{self.start_ms}ms on, one after the other: {c.describe()}" for c in self.changes]


def _tolerated(members: list[int], byzantine: dict[int, str]) -> bool:
    return sum(i in byzantine for i in members) <= (len(members) - 1) // 3


def plan_changes(seed: int, nodes: int, byzantine: dict[int, str]) -> Changes:
    rng = random.Random(f"cityledger-sim-reconfig/{seed}/{nodes}")
    members, fresh = list(range(nodes)), nodes
    changes = []
    for _ in range(rng.randint(1, CHANGES_MAX)):
        removable = [
            i for i in members if _tolerated([j for j in members if j != i], byzantine)
        ] if len(members) > SIZE_MIN else []  # fmt: skip
        kinds = ["rotate", "params"] + (["add"] if len(members) < SIZE_MAX else [])
        kinds += ["remove"] if removable else []
        kind = rng.choice(kinds)
        match kind:
            case "add":
                changes.append(Change(kind))
                members.append(fresh)
                fresh += 1
            case "remove":
                who = rng.choice(removable)
                members.remove(who)
                changes.append(Change(kind, who))
            case "rotate":
                changes.append(Change(kind, rng.choice([i for i in members if i not in byzantine])))
            case _:
                param = rng.choice(sorted(PARAMS))
                changes.append(Change(kind, param=param, value=rng.choice(PARAMS[param])))
    return Changes(rng.randint(*START_MS), tuple(changes))


class Governor:
    def __init__(self, sim: "Simulator", plan: Changes) -> None:
        self.sim = sim
        self.plan = plan
        self.handled = 0  # changes made effective or skipped
        self.effective: list[str] = []
        self._stage = ""  # "" (next change), propose, approve
        self._txs: list[Transaction] = []
        self._epoch = 0  # the epoch the current change must reach
        self._leaving: list[tuple[SimNode, int]] = []  # removed, not stopped yet; since when
        self._rekeys: dict[int, Any] = {}  # node number -> its new key, not restarted on yet
        self._rekeys_wanted: tuple[int, Any] = (-1, None)  # the rotation under way
        self._joining: SimNode | None = None  # started for the addition under way

    def start(self) -> None:
        self.sim.at(self.plan.start_ms, "reconfiguration begins", self._tick)

    def settled(self) -> bool:
        """Every change made (or skipped) and every node restarted or stopped by it."""
        return self.handled == len(self.plan.changes) and not self._leaving and not self._rekeys

    def _tick(self) -> None:
        self._tend()
        if self.handled < len(self.plan.changes):
            self._advance()
        if not self.settled():
            self.sim.at(TICK_MS, "governance", self._tick)

    def _advance(self) -> None:
        if not self._stage:
            self._propose(self.plan.changes[self.handled])
            return
        where = [self._committed_at(tx) for tx in self._txs]
        if None in where:
            self._offer([tx for tx, at in zip(self._txs, where, strict=True) if at is None])
            return
        outcomes = [at.store.outcome(tx.tx_id) for tx, at in zip(self._txs, where, strict=True)
                    if at is not None]  # fmt: skip
        if self._stage == "propose" and not any(outcomes):
            self._stage, self._txs = "approve", [self._approval(a) for a in APPROVERS]
            self._offer(self._txs)
            return
        # Approved (a later approval is refused `not_pending` once fewer organisations run
        # validators, as after a removal: the first one made the quorum), or refused.
        config = max((config_of(at.store.rules.get, self.sim.genesis) for at in where if at),
                     key=lambda c: c.epoch)  # fmt: skip
        if self._stage == "approve" and config.epoch >= self._epoch:
            self._effect(self.plan.changes[self.handled])
        elif self._stage == "approve" and "" not in outcomes:
            self._skip(f"refused {outcomes}")
        elif self._stage == "approve":
            raise Violation("governance", f"approved {outcomes}, not effective: {config.epoch}")
        else:
            self._skip(f"refused {outcomes}")

    def _propose(self, change: Change) -> None:
        config = self._config()
        body = self._body(change, config)
        if body is None:
            self._skip("no longer fits the set in force")
            return
        self._epoch = config.epoch + 1
        self._stage = "propose"
        tx = self._tx(PROPOSER, PROPOSALS + self._proposal_id(), PROPOSAL_TYPE, body)
        self._txs = [tx]
        self.sim.note_fault(f"propose: {change.describe()}")
        self._offer(self._txs)

    def _body(self, change: Change, config: Config) -> dict[str, Any] | None:
        sim, validators = self.sim, config.members.validators
        size = len(validators)
        target = sim.node(change.node) if change.node >= 0 else None
        if target is not None and config.members.validator(target.validator_id) is None:
            return None
        match change.kind:
            case "add" if size < SIZE_MAX:
                number = sim.n
                validator_id, key = f"node{number}", factory.seeded_key(f"sim/joining/{number}")
                org, kind, _ = factory.ORGS[number % len(factory.ORGS)]
                self._joining = sim.members.add(validator_id, key)
                return {"change": "add-validator", "id": validator_id, "organisation": org,
                        "kind": kind, "public_key": crypto.public_key_bytes(key).hex(),
                        "url": f"http://127.0.0.1:{7001 + number}",
                        "proof": epochs.sign_possession(key, sim.genesis.chain_id,
                                                        validator_id)}  # fmt: skip
            case "remove" if size > SIZE_MIN and target is not None:
                rest = [sim.members.number(v.id) for v in validators if v.id != target.validator_id]
                if not _tolerated(rest, {i: "" for i in range(sim.n) if not sim.node(i).honest}):
                    return None
                return {"change": "remove-validator", "id": target.validator_id}
            case "rotate" if target is not None:
                key = factory.seeded_key(f"sim/rotated/{target.validator_id}/{self.handled}")
                self._rekeys_wanted = (target.index, key)
                return {"change": "rotate-validator-key", "id": target.validator_id,
                        "public_key": crypto.public_key_bytes(key).hex(),
                        "url": f"http://127.0.0.1:{8001 + target.index}",
                        "proof": epochs.sign_possession(key, sim.genesis.chain_id,
                                                        target.validator_id)}  # fmt: skip
            case "params":
                return {"change": "set-params", "params": {change.param: change.value}}
        return None

    def _effect(self, change: Change) -> None:
        self.sim.note_fault(f"effective: {change.describe()} (epoch {self._epoch})")
        self.effective.append(change.kind)
        if change.kind == "remove":
            self._leaving.append((self.sim.node(change.node), self.sim.now_ms))
        elif change.kind == "rotate":
            number, key = self._rekeys_wanted
            self._rekeys[number] = key
        self._next()

    def _skip(self, why: str) -> None:
        self.sim.note_fault(f"skipped: {self.plan.changes[self.handled].describe()}: {why}")
        if self._joining is not None:  # never in a set: stopped
            self.sim.members.remove(self._joining)
        self._next()

    def _next(self) -> None:
        self.handled += 1
        self._stage, self._txs, self._joining = "", [], None

    def _tend(self) -> None:
        """Stop the removed nodes and restart the rotated ones, once each is past its change."""
        members = self.sim.members
        healed = self.sim.healed_ms
        for node, since in list(self._leaving):
            stranded = healed is not None and self.sim.now_ms >= max(since, healed) + STRANDED_MS
            if not node.up or node.place() is None or stranded:
                if stranded and node.up and node.place() is not None:
                    self.sim.note_fault(f"stranded short of its removal: n{node.index}")
                members.remove(node)
                self._leaving.remove((node, since))
        for number, key in list(self._rekeys.items()):
            node = self.sim.node(number)
            if not node.up or node.place() is None:  # down, syncing, or its old key retired
                members.rekey(node, key)
                del self._rekeys[number]

    # --- txs -----------------------------------------------------------------------------

    def _proposal_id(self) -> str:
        return f"sim-{self.handled}"

    def _approval(self, admin: str) -> Transaction:
        return self._tx(admin, APPROVALS + self._proposal_id(), APPROVAL_TYPE, {})

    def _tx(self, signer: str, key: str, type_: str, body: dict[str, Any]) -> Transaction:
        stamp = factory.BASE_TIME_MS + self.sim.now_ms
        return self.sim.testnet.tx(signer, key, body, stamp, type_)

    def _offer(self, batch: list[Transaction]) -> None:
        for index in self.sim.honest:
            if self.sim.node(index).up:
                self.sim.offer(index, tuple(batch))

    def _committed_at(self, tx: Transaction) -> SimNode | None:
        return next(
            (n for n in self.sim.nodes if n.honest and n.store.is_committed(tx.tx_id)), None
        )

    def _config(self) -> Config:
        best = max((n for n in self.sim.nodes if n.honest), key=lambda n: n.store.height)
        return config_of(best.store.rules.get, self.sim.genesis)
