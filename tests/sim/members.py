"""Who is in the simulation and where: node numbers, validator ids, joining and leaving nodes.

A node's number is its place in `Simulator.nodes` and on the simulated network, fixed for
the whole run; its index in an epoch's set is not (a validator removed before it moves it
down, docs/protocol.md 20.8), nor is every node in every set. This module owns the map between
the two (by validator id), the nodes a replica's sends reach (the set of its own epoch), and
the life of a node outside the set at its store's head: a joining validator, or one
restarted on a rotated key, first syncs certified blocks from the members of that set (each
checked by its store against its epoch's set) and starts its replica once its store reaches
the epoch that holds it; a removed validator is stopped for good.
"""

from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.events import FETCH_BLOCKS_MAX
from ledger.genesis import Validator
from ledger.gov.history import config_of
from tests.sim.checker import Violation
from tests.sim.node import DecodeCache, SimNode
from tests.sim.store import StoreRejected

if TYPE_CHECKING:
    from tests.sim.simulator import Simulator

SYNC_RETRY_MS: Final = 100  # a syncing node asks the next member this often
CLOCK_OFFSET_MS_MAX: Final = 20  # as the simulator's nodes


class Members:
    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self._numbers = {v.id: i for i, v in enumerate(sim.genesis.validators)}
        self._asked: dict[int, int] = {}  # syncing node -> how many asks it made
        self._sets: dict[int, tuple[int, tuple[Validator, ...]]] = {}  # node -> (height, set)

    def number(self, validator_id: str) -> int:
        return self._numbers[validator_id]

    def of_index(self, node: SimNode, index: int) -> int | None:
        """The node number of validator `index` of the set `node`'s sends are addressed in."""
        validators = self._addressed(node)
        return self._numbers.get(validators[index].id) if 0 <= index < len(validators) else None

    def peers(self, node: SimNode) -> list[int]:
        """The nodes a broadcast of `node` reaches: the other validators of that set."""
        return [self._numbers[v.id] for v in self._addressed(node) if v.id != node.validator_id]

    def _addressed(self, node: SimNode) -> tuple[Validator, ...]:
        """The set in force at `node`'s store's head, as the node's shell addresses what the
        replica emits (node/runtime.py follows the set once the block that changes it is
        written): an action the replica emitted before committing that block names peers by
        the old set, and is carried out before the write; one emitted after it, by the new
        set, waits for it. (Reading the replica's own epoch instead sent a relay held behind
        a write to the node itself: seed 479 at n = 7.)"""
        height = node.store.height
        cached = self._sets.get(node.index)
        if cached is None or cached[0] != height:
            config = config_of(node.store.rules.get, self._sim.genesis)
            cached = self._sets[node.index] = (height, tuple(config.members.validators))
        return cached[1]

    # --- joining -----------------------------------------------------------------------------

    def add(self, validator_id: str, key: Ed25519PrivateKey) -> SimNode:
        """A new honest node for `validator_id` (not in any set yet): it syncs until it is."""
        sim = self._sim
        number = len(sim.nodes)
        offset = sim.rng.randint(-CLOCK_OFFSET_MS_MAX, CLOCK_OFFSET_MS_MAX)
        node = SimNode(sim.genesis, number, key, offset, sim.replica_config, validator_id)
        sim.nodes.append(node)
        self._numbers[validator_id] = number
        sim.network.add_node()
        sim.decoded = DecodeCache(sim.genesis.chain_id, len(sim.nodes))
        sim.wire_up(node, "honest")
        sim.note_fault(f"n{number} ({validator_id}) started: syncing")
        self.sync(node)
        return node

    def sync(self, node: SimNode) -> None:
        """Sync `node`'s store from the members of its head's set until it is in a set."""
        assert node.replica is None
        assert not node.removed
        if node.syncing:
            return
        node.syncing = True
        self._sim.note_fault(f"n{node.index} syncs before its replica starts")
        self._ask(node)

    def _ask(self, node: SimNode) -> None:
        sim = self._sim
        if not node.syncing:
            return
        config = config_of(node.store.rules.get, sim.genesis)
        others = [self._numbers[v.id] for v in config.members.validators]
        others = [i for i in others if i != node.index]
        turn = self._asked.get(node.index, 0)
        self._asked[node.index] = turn + 1
        peer = others[turn % len(others)]
        delays = sim.network.delays(node.index, peer)
        if delays:
            sim.at(delays[0], f"n{peer} serves n{node.index}", lambda: self._served(node, peer))
        sim.at(SYNC_RETRY_MS, f"n{node.index} syncing", lambda: self._ask(node))

    def _served(self, node: SimNode, number: int) -> None:
        sim, peer = self._sim, self._sim.nodes[number]
        if not node.syncing or not peer.up or not sim.network.connected(node.index, number):
            return
        assert peer.behaviour is not None
        low = node.store.height + 1
        served = peer.behaviour.serve(peer.store.range(low, low + FETCH_BLOCKS_MAX - 1))
        for block, certificate in served or ():
            if block.height != node.store.height + 1:
                break
            try:
                node.store.append(block, certificate)
            except StoreRejected as exc:
                if peer.honest:
                    raise Violation(
                        "invalid sync", f"n{node.index} refuses honest n{number}'s block: {exc}"
                    ) from None
                break  # a forgery: the next member is asked
            sim.checker.on_commit(node, block, certificate)
            if node.place() is not None:
                node.syncing = False
                sim.note_fault(f"n{node.index} synced to height {node.store.height}: starts")
                sim.boot(node)
                return

    # --- leaving and rotating ----------------------------------------------------------------

    def remove(self, node: SimNode) -> None:
        """`node` is out of the set: stop it for good (it is never restarted)."""
        if node.removed:
            return
        if node.up:
            self._sim.stop(node, "removed from the set: stopped")
        node.removed, node.syncing = True, False

    def rekey(self, node: SimNode, key: Ed25519PrivateKey) -> None:
        """`node` restarts on its rotated `key`: now if it is up (it starts, or syncs until its
        store holds the new key); a crashed one comes back on it at its restart."""
        was_up = node.up
        if was_up:
            self._sim.stop(node, "stops to restart on its new key:")
        node.key = key
        assert node.behaviour is not None
        node.behaviour.wire.key = key
        self._sim.note_fault(f"n{node.index} holds its new key")
        if was_up:
            self._sim.boot(node)
