"""A test-only Byzantine node: the real node process with a lying transport, run on its own.

    python -m tests.faults.byzantine CONFIG.toml [--seed N] [--behaviours equivocate,replay,...]

It is `cityledger node run` (node.main.serve) with three things swapped in this process only
(nothing under node/ changes): the peer transport (`node.runtime.PeerTransport`), the way in
for peer messages (`Runtime.receive`, to collect messages to replay) and the block-sync route
(`node.app.get_peer_blocks` in the route table). It signs only with its own validator key.
Behaviours:

- equivocate: as primary, every PrePrepare goes out as two different valid blocks for the same
  height and parent (one with a tx fewer and stamped 1 ms later), each to a random part of the
  peers, and the node's Prepare and Commit votes go to each part for the block it was shown;
- replay: old envelopes (its own and other validators', signatures intact) ride along with
  what it sends;
- forge: it also sends envelopes with flipped signature bits, envelopes claiming another
  validator as sender, envelopes for another chain, truncated envelopes, random bytes, and tx
  batches holding a tx with a forged client signature;
- serve-forged: blocks it serves for state transfer carry broken certificates (a flipped vote,
  a certificate signed by itself alone, or a real certificate under another block);
- misoutcome (not among the default behaviours): as primary, every block it proposes goes out
  with one tx's outcome marked wrongly (accepted as refused, or refused as accepted) and an
  outcome root to match, the same block to every peer: the honest backups recompute the
  outcomes, refuse it, and change view;
- censor (not among the default behaviours): it never admits the txs of one client
  (`--victim`, by default the first of the genesis by id) that other validators relay to it,
  so as primary it proposes every client's txs but that one's and otherwise follows the
  protocol (its own API, which the tests' clients do not use, is left as it is).

What it did is logged (logger `cityledger.byzantine`), counted per kind every 200 actions.
"""

import argparse
import asyncio
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgpack
from aiohttp import web

import node.app
import node.runtime
from consensus import messages as m
from ledger import crypto, merkle
from ledger import tx as txs
from ledger.block import Block, Certificate, decode_block, decode_certificate
from ledger.encoding import encode
from ledger.kinds.base import REASONS
from ledger.kinds.execute import accepted_root, outcome_root
from node import main as node_main
from node.config import Identity, load, load_identity
from node.peers import PeerTransport

BEHAVIOURS: Final = ("equivocate", "replay", "forge", "serve-forged", "censor", "misoutcome")
DEFAULT_BEHAVIOURS: Final = ("equivocate", "replay", "forge", "serve-forged")
REPLAY_POOL_MAX: Final = 512
FLIPPED_KEPT: Final = 64
REPLAY_ODDS: Final = 0.5  # per message sent: also send one old envelope
FORGE_ODDS: Final = 0.3  # per message sent: also send one forged envelope

log = logging.getLogger("cityledger.byzantine")


class Liar:
    """Everything the Byzantine node holds: its key, the chain, a seeded rng, what it saw."""

    def __init__(
        self, identity: Identity, rng: random.Random, behaviours: set[str], victim: str = ""
    ) -> None:
        self.identity = identity
        self.chain_id = identity.genesis.chain_id
        self.n = len(identity.genesis.validators)
        self.rng = rng
        self.behaviours = behaviours
        self.seen: list[bytes] = []  # reservoir of envelopes to replay
        self.seen_count = 0
        self.counts: Counter[str] = Counter()
        self.shown: dict[tuple[int, int], tuple[Block, frozenset[int]]] = {}  # (view, h) -> alt
        self.flipped: dict[tuple[int, int], Block] = {}  # (view, h) -> its mismarked block
        self.victim = victim or min(identity.genesis.clients)  # whose txs the censor keeps out

    def count(self, what: str) -> None:
        self.counts[what] += 1
        if self.counts[what] == 1:  # the test reads from the log which faults fired
            log.info("byzantine action", extra={"what": what})
        if sum(self.counts.values()) % 200 == 0:
            log.info("byzantine actions so far", extra={"counts": dict(self.counts)})

    def remember(self, raw: bytes) -> None:
        self.seen_count += 1
        if len(self.seen) < REPLAY_POOL_MAX:
            self.seen.append(raw)
        else:
            slot = self.rng.randrange(self.seen_count)
            if slot < REPLAY_POOL_MAX:
                self.seen[slot] = raw

    def sign(self, msg: m.M) -> m.M:
        return m.sign(msg, self.identity.key, self.chain_id)

    def encode(self, msg: m.Message) -> bytes:
        return m.encode_message(msg, self.chain_id)

    # --- what goes out ------------------------------------------------------------------------

    def outgoing(self, peer: int, raw: bytes) -> list[bytes]:
        """The envelopes actually sent to `peer` instead of `raw`."""
        self.remember(raw)
        if "misoutcome" in self.behaviours:
            raw = self.mismarked(raw)
        out = [self.equivocated(peer, raw)] if "equivocate" in self.behaviours else [raw]
        if "replay" in self.behaviours and self.seen and self.rng.random() < REPLAY_ODDS:
            out.append(self.rng.choice(self.seen))
            self.count("replayed")
        if "forge" in self.behaviours and self.rng.random() < FORGE_ODDS:
            out.append(self.forged(raw))
        return out

    def equivocated(self, peer: int, raw: bytes) -> bytes:
        msg = m.decode_message(raw, self.chain_id)
        match msg:
            case m.PrePrepare(view=view, height=height, block=block):
                alt, part = self._alternative(view, height, block)
                if peer in part:
                    self.count("equivocating pre-prepare")
                    return self.encode(self.sign(dataclasses.replace(msg, block=alt)))
            case m.Prepare(view=view, height=height) | m.Commit(view=view, height=height):
                shown = self.shown.get((view, height))
                if shown is not None and peer in shown[1]:
                    self.count(f"vote for the other block ({type(msg).__name__})")
                    return self.encode(
                        self.sign(dataclasses.replace(msg, block_hash=shown[0].hash))
                    )
        return raw

    def mismarked(self, raw: bytes) -> bytes:
        """Its own PrePrepare with one outcome flipped (the same flip for every peer)."""
        msg = m.decode_message(raw, self.chain_id)
        if not isinstance(msg, m.PrePrepare) or msg.sender != self.identity.index:
            return raw
        block = msg.block
        if not block.txs:
            return raw
        key = (msg.view, msg.height)
        if key not in self.flipped:
            codes = list(block.outcomes)
            i = self.rng.randrange(len(codes))
            codes[i] = "" if codes[i] else self.rng.choice(REASONS)
            ids = [t.tx_id for t in block.txs]
            header = dataclasses.replace(block.header, outcome_root=outcome_root(ids, codes))
            self.flipped[key] = Block(header, block.txs, header.hash(), tuple(codes))
            log.info("mismarking", extra={"view": msg.view, "height": msg.height, "tx": i})
            while len(self.flipped) > FLIPPED_KEPT:
                del self.flipped[next(iter(self.flipped))]
        self.count("mismarked outcome")
        return self.encode(self.sign(dataclasses.replace(msg, block=self.flipped[key])))

    def _alternative(self, view: int, height: int, block: Block) -> tuple[Block, frozenset[int]]:
        if (view, height) not in self.shown:
            body = block.txs[:-1]
            header = dataclasses.replace(
                block.header, tx_root=merkle.root([t.tx_id for t in body]),
                outcome_root=accepted_root(body), tx_count=len(body),
                timestamp_ms=block.header.timestamp_ms + 1,
            )  # fmt: skip
            peers = [i for i in range(self.n) if i != self.identity.index]
            part = frozenset(self.rng.sample(peers, self.rng.randint(1, len(peers) - 1)))
            self.shown[(view, height)] = (Block(header, body, header.hash()), part)
            log.info("equivocating", extra={"view": view, "height": height,
                                            "other_block_to": sorted(part)})  # fmt: skip
        return self.shown[(view, height)]

    def forged(self, raw: bytes) -> bytes:
        kind = self.rng.choice(
            ("flipped signature", "another sender", "another chain", "truncated", "random bytes",
             "forged client signature")
        )  # fmt: skip
        self.count(f"forged: {kind}")
        msg = m.decode_message(raw, self.chain_id)
        match kind:
            case "flipped signature":
                bit = self.rng.randrange(8)
                return raw[:-1] + bytes([raw[-1] ^ (1 << bit)])
            case "another sender":
                other = self.rng.choice([i for i in range(self.n) if i != self.identity.index])
                return self.encode(dataclasses.replace(msg, sender=other))
            case "another chain":
                return m.encode_message(self.sign(msg), "another-chain")
            case "truncated":
                return raw[: self.rng.randrange(len(raw))]
            case "random bytes":
                return self.rng.randbytes(self.rng.randint(1, 300))
        return self.encode(self.sign(m.TxBatch((self._forged_tx(),), self.identity.index)))

    def _forged_tx(self) -> txs.Transaction:
        """A tx that names a real client but is signed by a key of our own."""
        client = self.rng.choice(sorted(self.identity.genesis.clients))
        return txs.create(
            crypto.generate_key(), chain_id=self.chain_id, client_id=client,
            nonce=self.rng.randrange(2**63), timestamp_ms=node.runtime.wall_clock_ms(),
            key="fiscal/forged", type_="forged", body={"forged": True},
        )  # fmt: skip

    def censored(self, batch: Sequence[txs.Transaction]) -> list[txs.Transaction]:
        """`batch` without the victim's txs (every other tx goes through as usual)."""
        kept = [t for t in batch if t.client_id != self.victim]
        if len(kept) < len(batch):
            self.count("censored a relayed tx")
            log.info("censoring", extra={"client": self.victim, "txs": len(batch) - len(kept)})
        return kept

    # --- what it serves -----------------------------------------------------------------------

    def forged_blocks(self, pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        out = []
        for raw_block, raw_cert in pairs:
            block, cert = decode_block(raw_block), decode_certificate(raw_cert)
            kind = self.rng.choice(("flipped vote", "self-signed", "another block"))
            self.count(f"served forged block: {kind}")
            if kind == "flipped vote":
                index, sig = cert.votes[0]
                votes = ((index, bytes([sig[0] ^ 1]) + sig[1:]), *cert.votes[1:])
                cert = dataclasses.replace(cert, votes=votes)
            elif kind == "self-signed":
                payload = encode([self.chain_id, cert.view, cert.height, cert.block_hash])
                sig = crypto.sign(self.identity.key, crypto.Domain.COMMIT, payload)
                cert = Certificate(cert.height, cert.block_hash, cert.view,
                                   ((self.identity.index, sig),))  # fmt: skip
            else:  # the real certificate under a block with a tx fewer
                body = block.txs[:-1]
                header = dataclasses.replace(
                    block.header, tx_root=merkle.root([t.tx_id for t in body]),
        outcome_root=accepted_root(body),
                    tx_count=len(body),
                )  # fmt: skip
                block = Block(header, body, header.hash())
            out.append((block.encode(), cert.encode()))
        return out


def install(liar: Liar) -> None:
    """Swap the transport, the message intake and the block-sync route of this process."""

    class LyingTransport(PeerTransport):
        def send(self, peer: int, raw: bytes) -> None:
            for envelope in liar.outgoing(peer, raw):
                super().send(peer, envelope)

        def broadcast(self, raw: bytes) -> None:
            for peer in self.peer_indices():
                self.send(peer, raw)

    honest_receive = node.runtime.Runtime.receive

    async def receive(self: node.runtime.Runtime, envelopes: Sequence[bytes]) -> None:
        for raw in envelopes:
            liar.remember(raw)
        await honest_receive(self, envelopes)

    honest_admit = node.runtime.Runtime._admit_relayed

    async def admit_relayed(self: node.runtime.Runtime, batch: Sequence[txs.Transaction]) -> None:
        await honest_admit(self, liar.censored(batch))

    honest_blocks = node.app.get_peer_blocks

    async def get_peer_blocks(request: web.Request) -> web.StreamResponse:
        response = await honest_blocks(request)
        assert isinstance(response, web.Response)
        assert isinstance(response.body, bytes)
        pairs = [(bytes(b), bytes(c)) for b, c in msgpack.unpackb(response.body, raw=False)]
        body = msgpack.packb([list(p) for p in liar.forged_blocks(pairs)], use_bin_type=True)
        return web.Response(body=body, content_type=response.content_type)

    node.runtime.PeerTransport = LyingTransport  # type: ignore[misc]
    node.runtime.Runtime.receive = receive  # type: ignore[method-assign]
    if "serve-forged" in liar.behaviours:  # the route table holds the handler itself
        node.app.ROUTES = tuple(  # type: ignore[misc,assignment]
            (method, path, get_peer_blocks if handler is honest_blocks else handler, rule)
            for method, path, handler, rule in node.app.ROUTES
        )
    if "censor" in liar.behaviours:
        node.runtime.Runtime._admit_relayed = admit_relayed  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.byzantine")
    parser.add_argument("config", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--behaviours", default=",".join(DEFAULT_BEHAVIOURS))
    parser.add_argument("--victim", default="", help="the client whose txs `censor` keeps out")
    args = parser.parse_args(argv)
    behaviours = {b for b in args.behaviours.split(",") if b}
    assert behaviours <= set(BEHAVIOURS), f"unknown behaviours: {behaviours - set(BEHAVIOURS)}"
    config = load(args.config)
    node_main.setup_logging(config.log_level)
    liar = Liar(load_identity(config), random.Random(args.seed), behaviours, args.victim)
    install(liar)
    log.info("byzantine node", extra={"behaviours": sorted(behaviours), "seed": args.seed})
    asyncio.run(node_main.serve(config))


if __name__ == "__main__":
    main()
