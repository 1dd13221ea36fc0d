"""Byzantine behaviours: what a faulty validator does to the messages its replica sends.

Each behaviour wraps a real `Replica` (the simulator runs it like any other) and only changes
what leaves the node: it may rewrite, duplicate, withhold or invent messages and forge the
blocks it serves, always signing with nothing but its own key. Honest nodes use `Honest`.
"""

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import messages as m
from ledger import block as blocks
from ledger import crypto, merkle
from ledger import tx as txs
from ledger.encoding import encode
from ledger.genesis import Genesis
from ledger.kinds.base import REASONS
from ledger.kinds.execute import accepted_root, outcome_root

REPLAY_POOL_MAX: Final = 256
EQUIVOCATIONS_KEPT: Final = 64

Served = tuple[tuple[blocks.Block, blocks.Certificate], ...]


@dataclass
class Wire:
    """What a behaviour may use: its own identity and key, the chain, the seeded rng, a socket."""

    index: int
    key: Ed25519PrivateKey
    genesis: Genesis
    rng: random.Random
    send: Callable[[int, bytes], None]  # raw bytes to one peer, through the simulated network
    committed_head: Callable[[], blocks.ChainHead]  # the head of this node's own store

    def encode(self, msg: m.Message) -> bytes:
        return m.encode_message(msg, self.genesis.chain_id)

    def sign(self, msg: m.Message) -> m.Message:
        """`msg` signed with this node's own key (the only key a Byzantine node holds)."""
        domain, payload = m.signed_payload(msg, self.genesis.chain_id)
        return dataclasses.replace(msg, signature=crypto.sign(self.key, domain, payload))

    def peers(self) -> list[int]:
        return [i for i in range(len(self.genesis.validators)) if i != self.index]


class Behaviour:
    name: ClassVar[str] = "honest"
    honest: ClassVar[bool] = True

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.acts: Counter[str] = Counter()  # what it did, by kind: tests check their fault fired

    def outgoing(self, receivers: list[int], msg: m.Message) -> None:
        raw = self.wire.encode(msg)
        for to in receivers:
            self.wire.send(to, raw)

    def on_receive(self, raw: bytes) -> None:
        """Every raw message that reaches this node, before decoding."""

    def serve(self, served: Served) -> Served | None:
        """What this node answers to a block fetch whose honest answer is `served`."""
        return served

    def admits(self, tx: txs.Transaction) -> bool:  # noqa: ARG002
        """Whether this node's shell lets `tx` into its replica's pool at all."""
        return True


Honest = Behaviour


class Silent(Behaviour):
    """Sends nothing, answers no fetch: a validator that is up but mute."""

    name = "silent"
    honest = False

    # The arguments are the interface's; a mute node ignores them.
    def outgoing(self, receivers: list[int], msg: m.Message) -> None:  # noqa: ARG002
        self.acts["withheld"] += 1

    def serve(self, served: Served) -> Served | None:  # noqa: ARG002
        self.acts["fetch_unanswered"] += 1
        return None


class Equivocator(Behaviour):
    """As primary, proposes a different block at the same height to some replicas and votes
    for it towards them, while the rest see and get votes for the original."""

    name = "equivocate"
    honest = False

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self._twins: dict[bytes, tuple[bytes, frozenset[int]]] = {}  # hash -> (twin, who)
        self._heads: dict[bytes, blocks.ChainHead] = {}  # own proposal -> the head after it

    def outgoing(self, receivers: list[int], msg: m.Message) -> None:
        if isinstance(msg, m.PrePrepare) and msg.sender == self.wire.index and len(receivers) > 1:
            self._equivocate(receivers, msg)
            return
        if isinstance(msg, m.Prepare | m.Commit) and msg.block_hash in self._twins:
            twin_hash, fooled = self._twins[msg.block_hash]
            twin = self.wire.sign(dataclasses.replace(msg, block_hash=twin_hash))
            self.acts["twin_vote"] += 1
            super().outgoing([r for r in receivers if r not in fooled], msg)
            super().outgoing([r for r in receivers if r in fooled], twin)
            return
        super().outgoing(receivers, msg)

    def _equivocate(self, receivers: list[int], msg: m.PrePrepare) -> None:
        rng = self.wire.rng
        fooled = frozenset(rng.sample(receivers, rng.randint(1, len(receivers) - 1)))
        parent = self._parent(msg.block)
        if parent is None:  # built on a block it did not propose and that is not committed
            twin_block = reordered_twin(msg.block)
        else:
            self._heads[msg.block.hash] = parent.advance(msg.block)
            twin_block = twin_of(parent, msg.block, rng)
        twin = self.wire.sign(dataclasses.replace(msg, block=twin_block))
        for kept in (self._twins, self._heads):
            if len(kept) > EQUIVOCATIONS_KEPT:
                del kept[next(iter(kept))]
        self._twins[msg.block.hash] = (twin_block.hash, fooled)
        self.acts["equivocated"] += 1
        super().outgoing([r for r in receivers if r not in fooled], msg)
        super().outgoing([r for r in receivers if r in fooled], twin)

    def _parent(self, block: blocks.Block) -> blocks.ChainHead | None:
        committed = self.wire.committed_head()
        if committed.hash == block.header.prev_hash:
            return committed
        return self._heads.get(block.header.prev_hash)


def twin_of(parent: blocks.ChainHead, block: blocks.Block, rng: random.Random) -> blocks.Block:
    """A different block on `parent` (fewer or reordered txs, stamped 1 ms later) that an honest
    primary could also have proposed."""
    body = list(block.txs)
    if len(body) > 1 and rng.random() < 0.5:
        body.pop()
    else:
        body.reverse()
    h = block.header
    return blocks.make_block(parent, tuple(body), h.timestamp_ms + 1, h.view, h.proposer)


def reordered_twin(block: blocks.Block) -> blocks.Block:
    """A different block on the same parent when the parent's head is unknown: the same txs in
    reverse order, stamped 1 ms later (every other header field stays valid)."""
    body = tuple(reversed(block.txs))
    h = block.header
    header = dataclasses.replace(
        h,
        tx_root=merkle.root([t.tx_id for t in body]),
        outcome_root=accepted_root(body),
        timestamp_ms=h.timestamp_ms + 1,
    )
    return blocks.Block(header, body, header.hash())


class Replayer(Behaviour):
    """Behaves, but also re-sends old messages (its own and others', signatures intact)."""

    name = "replay"
    honest = False

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self._pool: list[bytes] = []
        self._seen = 0

    def _keep(self, raw: bytes) -> None:
        # Reservoir sampling: every message ever seen is equally likely to be replayed later.
        self._seen += 1
        if len(self._pool) < REPLAY_POOL_MAX:
            self._pool.append(raw)
            return
        slot = self.wire.rng.randrange(self._seen)
        if slot < REPLAY_POOL_MAX:
            self._pool[slot] = raw

    def on_receive(self, raw: bytes) -> None:
        self._keep(raw)

    def outgoing(self, receivers: list[int], msg: m.Message) -> None:
        raw = self.wire.encode(msg)
        for to in receivers:
            self.wire.send(to, raw)
        self._keep(raw)
        rng = self.wire.rng
        if self._pool and rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                self.wire.send(rng.choice(self.wire.peers()), rng.choice(self._pool))
                self.acts["replayed"] += 1


class Forger(Behaviour):
    """Behaves, but also sends garbage bytes, corrupted or impersonated signatures, signed votes
    for blocks that do not exist; as primary, proposes invalid blocks to everyone half the time;
    and serves forged blocks."""

    name = "forge"
    honest = False

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self._proposed: list[txs.Transaction] = []  # txs of its earlier proposals

    def outgoing(self, receivers: list[int], msg: m.Message) -> None:
        rng = self.wire.rng
        if isinstance(msg, m.PrePrepare) and msg.sender == self.wire.index:
            earlier = list(self._proposed)
            self._proposed.extend(msg.block.txs)
            del self._proposed[:-REPLAY_POOL_MAX]
            if rng.random() < 0.5:
                msg = self.wire.sign(invalid_proposal(msg, earlier, rng))
                self.acts["invalid_proposal"] += 1
        super().outgoing(receivers, msg)
        if rng.random() < 0.4:
            to = rng.choice(self.wire.peers())
            self.wire.send(to, self._forge(msg))
            self.acts["forged"] += 1

    def _forge(self, msg: m.Message) -> bytes:
        rng, wire = self.wire.rng, self.wire
        raw = wire.encode(msg)
        match rng.randrange(7):
            case 0:
                return rng.randbytes(rng.randint(0, 300))
            case 1:
                flipped = bytearray(raw)
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
                return bytes(flipped)
            case 2:
                return raw[: rng.randrange(len(raw))]
            case 3:
                sig = bytearray(msg.signature or bytes(64))
                sig[rng.randrange(len(sig))] ^= 0xFF
                return wire.encode(dataclasses.replace(msg, signature=bytes(sig)))
            case 4:
                other = rng.choice(wire.peers())
                return wire.encode(dataclasses.replace(msg, sender=other))
            case 5 if isinstance(msg, m.PrePrepare | m.Prepare | m.Commit):
                vote = m.Commit if rng.random() < 0.5 else m.Prepare
                bogus = vote(msg.view, msg.height, rng.randbytes(32), wire.index)
                return wire.encode(wire.sign(bogus))
            case 6 if isinstance(msg, m.PrePrepare) and msg.block.txs:
                return wire.encode(wire.sign(_with_forged_tx(msg)))
        return rng.randbytes(rng.randint(1, 64))

    def serve(self, served: Served) -> Served | None:
        rng = self.wire.rng
        if not served or rng.random() < 0.2:
            return served
        index = rng.randrange(len(served))
        block, cert = served[index]
        match rng.randrange(3):
            case 0:  # a vote's signature broken
                votes = list(cert.votes)
                i, sig = votes[0]
                votes[0] = (i, bytes(b ^ 0x55 for b in sig))
                forged = (block, dataclasses.replace(cert, votes=tuple(votes)))
            case 1:  # a different block under the real certificate
                forged = (reordered_twin(block), cert)
            case _:  # a certificate signed by the forger alone
                payload = blocks.commit_payload(
                    self.wire.genesis.chain_id, cert.view, block.height, block.hash
                )
                sig = crypto.sign(self.wire.key, crypto.Domain.COMMIT, payload)
                lone = blocks.Certificate(
                    block.height, block.hash, cert.view, ((self.wire.index, sig),)
                )
                forged = (block, lone)
        self.acts["served_forged"] += 1
        return (*served[:index], forged, *served[index + 1 :])


def invalid_proposal(
    msg: m.PrePrepare, earlier: list[txs.Transaction], rng: random.Random
) -> m.PrePrepare:
    """`msg` (unsigned) with a block that breaks one ledger rule: a tx with a forged client
    signature, a tx it already proposed (committed or in flight: a replay), a wrong history
    root, a stamp an hour ahead, or a tx root that does not match the txs."""
    block = msg.block
    h = block.header
    body = block.txs
    match rng.randrange(5):
        case 0 if block.txs:
            return _with_forged_tx(msg)
        case 1 if earlier:
            replayed = rng.choice(earlier)
            if replayed in body:
                return _with_forged_tx(msg)
            body = (*body, replayed)
            header = dataclasses.replace(
                h, tx_root=merkle.root([t.tx_id for t in body]), outcome_root=accepted_root(body)
            )
            if hasattr(h, "tx_count"):
                header = dataclasses.replace(header, tx_count=len(body))
        case 2:
            header = dataclasses.replace(h, history_root=rng.randbytes(32))
        case 3:
            header = dataclasses.replace(h, timestamp_ms=h.timestamp_ms + 3_600_000)
        case _:
            header = dataclasses.replace(h, tx_root=rng.randbytes(32))
    return dataclasses.replace(msg, block=blocks.Block(header, body, header.hash()), signature=b"")


def _with_forged_tx(msg: m.PrePrepare) -> m.PrePrepare:
    """`msg` whose block's first tx carries a signature that is not its client's."""
    block = msg.block
    first = block.txs[0]
    raw = encode(
        [
            txs.TX_VERSION, first.chain_id, first.client_id, first.nonce + 1_000_000,
            first.timestamp_ms, first.key, first.type, first.body, first.signature,
        ]
    )  # fmt: skip
    forged_tx = txs.decode_tx(raw)
    body = (forged_tx, *block.txs[1:])
    h = block.header
    header = dataclasses.replace(
        h, tx_root=merkle.root([t.tx_id for t in body]), outcome_root=accepted_root(body)
    )
    return dataclasses.replace(msg, block=blocks.Block(header, body, header.hash()), signature=b"")


class Censor(Behaviour):
    """Never lets one client's txs into its pool (the first client of the genesis, by id), so
    as primary it proposes every client's txs but that one's, and otherwise follows the
    protocol: the primary that commits other work while one client waits forever."""

    name = "censor"
    honest = False

    def __init__(self, wire: Wire) -> None:
        super().__init__(wire)
        self.victim = min(wire.genesis.clients)
        self.censored = 0  # the victim's txs it kept out of its pool

    def admits(self, tx: txs.Transaction) -> bool:
        if tx.client_id != self.victim:
            return True
        self.censored += 1
        return False


class Mismarker(Behaviour):
    """As primary, marks one tx's outcome wrongly in each proposal it sends (an accepted tx as
    refused, a refused one as accepted), with a matching outcome root and its own signature:
    a well-formed block that every honest backup recomputes and refuses."""

    name = "misoutcome"
    honest = False

    def outgoing(self, receivers: list[int], msg: m.Message) -> None:
        if isinstance(msg, m.PrePrepare) and msg.sender == self.wire.index and msg.block.txs:
            msg = self.wire.sign(
                dataclasses.replace(msg, block=mismarked(msg.block, self.wire.rng))
            )
            self.acts["mismarked"] += 1
        super().outgoing(receivers, msg)


def mismarked(block: blocks.Block, rng: random.Random) -> blocks.Block:
    """`block` with one outcome flipped and its header's outcome root made to match."""
    codes = list(block.outcomes)
    i = rng.randrange(len(codes))
    codes[i] = "" if codes[i] else rng.choice(REASONS)
    header = dataclasses.replace(
        block.header, outcome_root=outcome_root([t.tx_id for t in block.txs], codes)
    )
    return blocks.Block(header, block.txs, header.hash(), tuple(codes))


BEHAVIOURS: Final[dict[str, type[Behaviour]]] = {
    b.name: b for b in (Honest, Silent, Equivocator, Replayer, Forger, Censor, Mismarker)
}
# The kinds the `byzantine` fault family draws from; `censor` is a fault family of its own.
BYZANTINE_KINDS: Final = tuple(
    name for name, b in BEHAVIOURS.items() if not b.honest and name != Censor.name
)
