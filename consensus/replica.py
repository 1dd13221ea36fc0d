"""The PBFT replica (Castro & Liskov, adapted to a chain of blocks): a sans-I/O state machine.

Contract with the shell (the node, or the simulator):
- `Replica(genesis, index, key, head, is_committed, persisted, config, head_certificate)`:
  `head` is the store's committed head (`ChainHead.genesis(g)` for an empty store) and
  `head_certificate` its certificate (None at height 0); `is_committed(tx_id)` asks the store;
  `persisted` is every entry of earlier `Persist` actions still on disk. Send `Start()` first.
- `handle(event, now_ms) -> list[Action]`; the shell carries out the actions in order and
  completely before the next event (consensus/events.py). Admitted client txs go in as
  `ClientTxs` while `pool_free` allows (else the shell answers 429); the replica relays them to
  its peers as a `TxBatch`, which the receiving shell admits itself and hands in with
  `relayed=True`. Every other peer message goes in as `Received` after `decode_message`; the
  replica checks signatures itself.
- Read-only: `view`, `primary`, `committed_height`, `head`, `pending`, `pool_free`,
  `in_view_change`, `counters`, `has_pending(tx_id)`, `pending_tx(tx_id)`, `log_size()`.

Protocol, per height h of the chain (the PBFT sequence number):
- The primary of view v (validator v mod n) proposes a block in a PrePrepare; every replica,
  the primary included, validates it in full (`ledger.block.check_block`, the block's stamp
  against its own clock) and persists its acceptance before it sends Prepare.
- On a quorum q of matching Prepares (q = 2f+1 when n = 3f+1; see `ledger.genesis.Quorums`)
  the block is prepared (the proof is persisted); a replica sends
  Commit for h only once it has sent Commit for h-1 in this view (or h-1 is committed). q
  matching Commits form the block's certificate; blocks commit strictly in height order.
- Up to `pipeline_depth` heights are in flight; messages beyond the `window` above the head are
  ignored. Every `checkpoint_interval` blocks a signed Checkpoint; q make it stable and the
  persisted promises below it are dropped. Memory is bounded by the window, not the chain.
- No progress on pending work within the view-change timeout starts a view change; f+1
  ViewChanges for later views make a replica join the lowest; the new primary sends NewView
  with q ViewChanges and every replica recomputes what it re-proposes
  (consensus/viewchange.py). A view change that gets no quorum is re-sent, not escalated,
  so a lone replica cannot run ahead; one with a quorum whose primary fails moves on, with a
  back-off capped at `view_change_timeout_max_ms`.
- Status gossip on the retransmit timer re-sends own votes when stalled, hands a NewView to a
  replica left in an older view, and starts state transfer when f+1 peers are ahead: certified
  blocks are fetched and applied only if they extend the head and their certificate verifies.
"""

import itertools
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger import crypto
from ledger import tx as txs
from ledger.block import (
    Block,
    Certificate,
    ChainHead,
    check_block,
    check_body,
    decode_block,
    make_block,
    verify_certificate,
)
from ledger.encoding import decode, encode
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis

from consensus import messages as m
from consensus.events import (
    FETCH_BLOCKS_MAX,
    Action,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientTxs,
    CommitBlock,
    Event,
    FetchBlocks,
    Persist,
    Received,
    Send,
    SetTimer,
    Start,
    Timeout,
    Timer,
)
from consensus.instance import Instance
from consensus.pool import TxPool
from consensus.viewchange import Selection, check_view_change, select

VERIFIED_CACHE_MAX: Final = 8192  # signatures already checked (retransmissions are common)
VIEW_AHEAD_MAX: Final = 64  # ViewChanges kept for views at most this far above ours
RELAY_AGAIN_MAX: Final = 1000  # pending txs re-sent to the primary per stalled tick
STATE_BYTES_MAX: Final = 64 * 1024 * 1024

# Keys of the replica's persisted state (Persist actions).
KEY_VIEW: Final = b"view"  # encode([view, in_view_change])
PREFIX_ACCEPTED: Final = b"a/"  # height -> encode([view, block_hash]): the block we prepared
PREFIX_PREPARED: Final = b"p/"  # height -> encode([view, block_hash, [[sender, sig]...]])
PREFIX_BLOCK: Final = b"b/"  # block hash -> block bytes of accepted blocks


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


@dataclass(frozen=True)
class ReplicaConfig:
    pool_capacity: int = 100_000
    # Blocks the primary keeps in flight at once. 2, not more: under load the primary then
    # waits for a slot and proposes fewer, larger blocks (every block costs each node a
    # dozen signatures, three writes and a round of messages); at light load blocks rarely
    # overlap anyway.
    pipeline_depth: int = 2
    window: int = 16  # heights above the committed head a replica takes part in
    retransmit_ms: int = 500
    fetch_timeout_ms: int = 2000
    fetch_blocks_max: int = FETCH_BLOCKS_MAX  # fewer per fetch is allowed, never more
    view_change_timeout_max_ms: int = 30_000  # the back-off cap

    def __post_init__(self) -> None:
        assert 1 <= self.pipeline_depth <= self.window <= m.PREPARED_MAX
        assert self.pool_capacity >= 1
        assert 1 <= self.fetch_blocks_max <= FETCH_BLOCKS_MAX


class Replica:
    """One validator's PBFT replica. See the module docstring for the contract."""

    def __init__(
        self,
        genesis: Genesis,
        index: int,
        key: Ed25519PrivateKey,
        head: ChainHead,
        is_committed: Callable[[bytes], bool],
        persisted: Mapping[bytes, bytes] | None = None,
        config: ReplicaConfig | None = None,
        head_certificate: Certificate | None = None,
    ) -> None:
        assert 0 <= index < len(genesis.validators)
        assert (head_certificate is None) == (head.height == 0), "a head above 0 needs its cert"
        self.genesis = genesis
        self.index = index
        self.config = config or ReplicaConfig()
        self.counters: Counter[str] = Counter()
        self._key = key
        self._n = len(genesis.validators)
        self._quorum = genesis.quorums.commit
        self._weak = genesis.quorums.weak
        self._is_committed_in_store = is_committed
        self.head = head
        self._head_cert = head_certificate
        self.view = 0
        self.in_view_change = False
        self.pool = TxPool(self.config.pool_capacity)
        self._slots: dict[int, Instance] = {}
        self._prepared: dict[int, m.PreparedProof] = {}
        self._waiting: dict[int, m.PrePrepare] = {}  # pre-prepares whose parent is not here yet
        self._checkpoints: dict[int, dict[int, tuple[bytes, bytes]]] = {}
        self._own_checkpoints: dict[int, bytes] = {}
        self.stable_checkpoint = 0
        self._view_changes: dict[int, dict[int, m.ViewChange]] = {}
        self._own_view_change: m.ViewChange | None = None
        self._new_view: m.NewView | None = None
        self._deferred: Selection | None = None
        self._peer_status: dict[int, tuple[int, int]] = {}
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._now = 0
        self._out: list[Action] = []
        self._last_progress_ms = 0
        self._busy = False
        self._progress_deadline: int | None = None
        self._vc_attempts = 0
        self._last_proposal_ms = 0
        self._propose_armed = False
        self._propose_at = 0  # when the armed PROPOSE timer fires
        self._fetching: int | None = None  # peer asked
        self._bad_peers: set[int] = set()
        self._tick_height = -1  # committed height at the last retransmit tick
        self._persisted_blocks: dict[bytes, int] = {}  # accepted blocks on disk, by hash
        self._in_flight_key: tuple[tuple[int, bytes], ...] = ()
        self._in_flight_ids: frozenset[bytes] = frozenset()
        self._gc_floor = head.height + 1 - config_window(config)
        self._restore(persisted or {})

    # --- read-only views for the shell ----------------------------------------------------

    @property
    def primary(self) -> int:
        return self.view % self._n

    @property
    def committed_height(self) -> int:
        return self.head.height

    @property
    def pending(self) -> int:
        return len(self.pool)

    @property
    def pool_free(self) -> int:
        return self.pool.free

    def has_pending(self, tx_id: bytes) -> bool:
        return tx_id in self.pool

    def pending_tx(self, tx_id: bytes) -> txs.Transaction | None:
        """The pooled tx with this id (the shell decodes peer messages against the pool)."""
        return self.pool.get(tx_id)

    def log_size(self) -> int:
        """Entries in every per-height and per-view structure (bounded, whatever the length)."""
        return (
            sum(1 + s.vote_count() for s in self._slots.values())
            + len(self._prepared)
            + len(self._waiting)
            + sum(len(c) for c in self._checkpoints.values())
            + len(self._own_checkpoints)
            + sum(len(v) for v in self._view_changes.values())
            + len(self._verified)
        )

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: Event, now_ms: int) -> list[Action]:
        self._now = max(self._now, now_ms)
        match event:
            case Start():
                self._on_start()
            case Received(message=msg):
                self._on_message(msg)
            case Timeout(timer=timer):
                self._on_timeout(timer)
            case ClientTxs(txs=batch, relayed=relayed):
                self._on_client_txs(batch, relayed=relayed)
            case BlocksFetched(peer=peer, blocks=fetched):
                self._on_blocks_fetched(peer, fetched)
        self._maybe_propose()
        self._arm_progress()
        out, self._out = self._out, []
        return out

    # --- restart ----------------------------------------------------------------------------

    def _restore(self, persisted: Mapping[bytes, bytes]) -> None:
        """Rebuild what this replica promised before a restart, so it never votes otherwise."""
        if KEY_VIEW in persisted:
            self.view, flag = decode(persisted[KEY_VIEW], STATE_BYTES_MAX)
            self.in_view_change = bool(flag)
        blocks_by_hash = {
            k[len(PREFIX_BLOCK) :]: v for k, v in persisted.items() if k.startswith(PREFIX_BLOCK)
        }
        for digest, raw in blocks_by_hash.items():
            self._persisted_blocks[digest] = _decode_own_block(raw).height
        for key, value in sorted(persisted.items()):
            height = int.from_bytes(key[2:], "big") if len(key) == 10 else 0
            if height <= self.head.height:
                continue
            if key.startswith(PREFIX_PREPARED):
                view, digest, sigs = decode(value, STATE_BYTES_MAX)
                block = _decode_own_block(blocks_by_hash[digest])
                votes = tuple((s, sig) for s, sig in sigs)
                self._prepared[height] = m.PreparedProof(view, height, block, votes)
        if self.in_view_change:
            return
        parent = self.head
        for height in range(self.head.height + 1, self.head.height + self.config.window + 1):
            accepted = persisted.get(PREFIX_ACCEPTED + _h(height))
            if accepted is None:
                break
            view, digest = decode(accepted, STATE_BYTES_MAX)
            block = _decode_own_block(blocks_by_hash[digest])
            if view != self.view or block.header.prev_hash != parent.hash:
                break
            slot = self._slots.setdefault(height, Instance(height, view))
            slot.accept(block, parent)
            assert slot.head_after is not None
            parent = slot.head_after

    def _on_start(self) -> None:
        self._last_progress_ms = self._now
        self._out.append(SetTimer(Timer.RETRANSMIT, self._now + self.config.retransmit_ms))
        self._broadcast_status()
        if self.in_view_change:
            self._send_view_change()
            return
        for slot in sorted(self._slots.values(), key=lambda s: s.height):
            assert slot.block is not None
            self._vote_prepare(slot)
        self._progress()

    # --- messages ---------------------------------------------------------------------------

    def _on_message(self, msg: m.Message) -> None:
        if msg.sender == self.index or not 0 <= msg.sender < self._n:
            self._invalid("sender")
            return
        if isinstance(msg, m.Prepare | m.Commit) and not self._in_window(msg.view, msg.height):
            return  # dropped unread whatever its signature (e.g. the vote after a quorum)
        if not self._signature_ok(msg):
            self._invalid("bad_signature")
            return
        try:
            self._dispatch(msg)
        except m.InvalidMessage as exc:
            self._invalid(_reason(exc))

    def _dispatch(self, msg: m.Message) -> None:
        match msg:
            case m.PrePrepare():
                self._on_pre_prepare(msg)
            case m.Prepare():
                if self._in_window(msg.view, msg.height):
                    self._slot(msg.height).add_prepare(msg.sender, msg.block_hash, msg.signature)
                    self._progress()
            case m.Commit():
                if self._in_window(msg.view, msg.height):
                    self._slot(msg.height).add_commit(msg.sender, msg.block_hash, msg.signature)
                    self._progress()
            case m.Checkpoint():
                self._on_checkpoint(msg)
            case m.ViewChange():
                self._on_view_change(msg)
            case m.NewView():
                self._on_new_view(msg)
            case m.Status():
                self._on_status(msg)
            case m.TxBatch():
                raise m.InvalidMessage("tx batches go through the shell's admission")

    def _signature_ok(self, msg: m.Message) -> bool:
        domain, payload = m.signed_payload(msg, self.genesis.chain_id)
        cache_key = crypto.sha256(domain.value + payload + msg.signature) + bytes([msg.sender])
        if cache_key in self._verified:
            return True
        key = self.genesis.validators[msg.sender].key
        if not crypto.verify(key, domain, payload, msg.signature):
            return False
        self._remember_verified(cache_key)
        return True

    def _remember_verified(self, cache_key: bytes) -> None:
        self._verified[cache_key] = None
        if len(self._verified) > VERIFIED_CACHE_MAX:
            self._verified.popitem(last=False)

    def _invalid(self, reason: str) -> None:
        self.counters[f"invalid_message:{reason}"] += 1

    def _in_window(self, view: int, height: int) -> bool:
        return (
            view == self.view
            and not self.in_view_change
            and self.head.height < height <= self.head.height + self.config.window
        )

    def _slot(self, height: int) -> Instance:
        return self._slots.setdefault(height, Instance(height, self.view))

    def _sign(self, msg: m.M) -> m.M:
        return m.sign(msg, self._key, self.genesis.chain_id)

    # --- normal case ------------------------------------------------------------------------

    def _on_pre_prepare(self, pp: m.PrePrepare, *, own: bool = False) -> None:
        if not self._in_window(pp.view, pp.height):
            return
        header = pp.block.header
        if pp.sender != self.primary or header.proposer != pp.sender:
            raise m.InvalidMessage("pre-prepare: not from the primary of its view")
        if pp.block.height != pp.height or header.view != pp.view:
            raise m.InvalidMessage("pre-prepare: block does not match the message")
        if header.timestamp_ms > self._now + self.genesis.params.clock_skew_ms:
            raise m.InvalidMessage("pre-prepare: block stamped in the future")
        slot = self._slots.get(pp.height)
        if slot is not None and slot.block is not None:
            if slot.block.hash != pp.block.hash:
                self.counters["equivocation"] += 1
            return
        parent = self._parent(pp.height)
        if parent is None or self._deferred is not None:
            self._waiting[pp.height] = pp
            return
        try:
            check_block(
                pp.block, parent, self.genesis,
                is_committed=self._committed_or_in_flight(pp.height),
                signatures_checked=self.pool,
            )  # fmt: skip
        except InvalidBlock as exc:
            raise m.InvalidMessage(f"pre-prepare: {exc}") from None
        self._accept(pp.block, parent, pp if own else None)
        follower = self._waiting.pop(pp.height + 1, None)
        if follower is not None and follower.view == self.view:
            self._on_buffered(follower)

    def _parent(self, height: int) -> ChainHead | None:
        if height == self.head.height + 1:
            return self.head
        below = self._slots.get(height - 1)
        return below.head_after if below is not None else None

    def _committed_or_in_flight(self, height: int) -> Callable[[bytes], bool]:
        earlier = [s.tx_ids for h, s in self._slots.items() if h < height and s.block]

        def seen(tx_id: bytes) -> bool:
            return self._is_committed_in_store(tx_id) or any(tx_id in ids for ids in earlier)

        return seen

    def _accept(self, block: Block, parent: ChainHead, own_pp: m.PrePrepare | None) -> None:
        """Pre-prepare `block`: persist the promise, then (primary) propose and vote Prepare."""
        slot = self._slot(block.height)
        slot.accept(block, parent)
        slot.checked = True  # every caller ran check_block on it against `parent`
        self._persisted_blocks[block.hash] = block.height
        self._out.append(
            Persist(
                puts=(
                    (PREFIX_BLOCK + block.hash, block.encode()),
                    (PREFIX_ACCEPTED + _h(block.height), encode([self.view, block.hash])),
                )
            )
        )
        if own_pp is not None:
            slot.own_pre_prepare = own_pp
            self._out.append(Broadcast(own_pp))
        self._vote_prepare(slot)
        self._progress()

    def _vote_prepare(self, slot: Instance) -> None:
        assert slot.block is not None
        prepare = self._sign(m.Prepare(self.view, slot.height, slot.block.hash, self.index))
        slot.own_prepare = prepare
        slot.add_prepare(self.index, slot.block.hash, prepare.signature)
        self._out.append(Broadcast(prepare))

    def _progress(self) -> None:
        """Prepared → send Commit (in height order) → commit, as far as the votes allow."""
        for height in sorted(self._slots):
            slot = self._slots[height]
            if slot.reaches_prepared(self._quorum):
                self._persist_prepared(slot.prepared_proof(self._quorum))
        height = self.head.height + 1
        while (nxt := self._slots.get(height)) is not None and nxt.prepared:
            slot = nxt
            if slot.own_commit is None:
                assert slot.block is not None
                commit = self._sign(m.Commit(self.view, height, slot.block.hash, self.index))
                slot.own_commit = commit
                slot.add_commit(self.index, slot.block.hash, commit.signature)
                self._out.append(Broadcast(commit))
            height += 1
        while (first := self._slots.get(self.head.height + 1)) is not None and first.can_commit(
            self._quorum
        ):
            assert first.block is not None
            self._apply_commit(
                first.block, first.certificate(self._quorum), txs_checked=first.checked
            )

    def _persist_prepared(self, proof: m.PreparedProof) -> None:
        self._prepared[proof.height] = proof
        votes = [list(v) for v in proof.prepares]
        value = encode([proof.view, proof.block.hash, votes])
        self._out.append(Persist(puts=((PREFIX_PREPARED + _h(proof.height), value),)))

    def _apply_commit(
        self, block: Block, certificate: Certificate, *, txs_checked: bool = False
    ) -> None:
        """Append a certified block: the one way the head moves (consensus or state transfer)."""
        assert block.height == self.head.height + 1
        self._out.append(CommitBlock(block, certificate, txs_checked))
        self.head = self.head.advance(block)
        self._head_cert = certificate
        self.counters["blocks_committed"] += 1
        self.counters["txs_committed"] += len(block.txs)
        self.pool.remove([t.tx_id for t in block.txs])
        for table in (self._slots, self._prepared, self._waiting):
            for height in [h for h in table if h <= block.height]:
                del table[height]
        nxt = self._slots.get(block.height + 1)
        if nxt is not None and nxt.block is not None and nxt.block.header.prev_hash != block.hash:
            self._slots.clear()  # built on a block that lost: those votes are void
        self._last_progress_ms = self._now
        self._vc_attempts = 0
        if block.height % self.genesis.params.checkpoint_interval == 0:
            self._send_checkpoint(block)
        if self._deferred is not None and self.head.height >= self._deferred.base_height:
            selection, self._deferred = self._deferred, None
            self._install_selection(selection)

    # --- proposing --------------------------------------------------------------------------

    def _maybe_propose(self) -> None:
        if self.primary != self.index or self.in_view_change or self._deferred is not None:
            return
        params = self.genesis.params
        while True:
            tip = self._tip()
            if tip.height - self.head.height >= self.config.pipeline_depth or not self.pool:
                return
            in_flight = self._in_flight()
            unproposed = len(self.pool) - self.pool.count_of(in_flight)
            if unproposed <= 0:
                return
            # At most one block per interval; one more interval per block still in flight, so
            # that a busy primary gathers larger blocks (each block costs every node a round of
            # signed votes and writes) while an idle one still proposes after one interval.
            in_flight_blocks = tip.height - self.head.height
            due = self._last_proposal_ms + params.block_interval_ms * (1 + in_flight_blocks)
            full = unproposed >= params.block_txs_max
            if self._now < due and not full:
                if not self._propose_armed or due < self._propose_at:
                    self._propose_armed = True
                    self._propose_at = due
                    self._out.append(SetTimer(Timer.PROPOSE, due))
                return
            if not self._propose(tip, in_flight):
                return

    def _in_flight(self) -> frozenset[bytes]:
        """Tx ids of every block accepted above the head in this view."""
        # Asked at every event on the primary, while the blocks above the head change only a
        # few times per block: keep the union until they do.
        key = tuple((h, s.block.hash) for h, s in self._slots.items() if s.block is not None)
        if key != self._in_flight_key:
            self._in_flight_key = key
            self._in_flight_ids = frozenset().union(*(s.tx_ids for s in self._slots.values()))
        return self._in_flight_ids

    def _tip(self) -> ChainHead:
        """The head after every block accepted in this view, in order."""
        tip = self.head
        while (slot := self._slots.get(tip.height + 1)) is not None and slot.head_after:
            tip = slot.head_after
        return tip

    def _propose(self, parent: ChainHead, in_flight: frozenset[bytes]) -> bool:
        params = self.genesis.params
        timestamp = max(self._now, parent.timestamp_ms)
        oldest = timestamp - params.tx_ttl_ms  # older ones leave the pool at the next tick
        chosen: list[txs.Transaction] = []
        size = 0
        for tx in self.pool.candidates(in_flight):
            if len(chosen) >= params.block_txs_max or size + len(tx.raw) > params.block_bytes_max:
                break
            if not oldest <= tx.timestamp_ms <= timestamp + params.clock_skew_ms:
                continue
            if self._is_committed_in_store(tx.tx_id):
                continue
            chosen.append(tx)
            size += len(tx.raw)
        if not chosen:
            return False
        block = make_block(parent, tuple(chosen), timestamp, self.view, self.index)
        pp = self._sign(m.PrePrepare(self.view, block.height, block, self.index))
        self._last_proposal_ms = self._now
        # The primary's own proposal passes the same validation as a peer's.
        self._on_pre_prepare(pp, own=True)
        # Accepted, or (a single validator is its own quorum) already committed.
        slot = self._slots.get(block.height)
        assert self.head.height >= block.height or (slot is not None and slot.block == block)
        return True

    def _on_client_txs(self, batch: tuple[txs.Transaction, ...], *, relayed: bool) -> None:
        added = tuple(t for t in batch if self.pool.add(t, self._now))
        self.counters["txs_pooled"] += len(added)
        if added and not relayed:
            relay = self._sign(m.TxBatch(added, self.index))
            self._out.append(Broadcast(relay))

    # --- checkpoints ------------------------------------------------------------------------

    def _send_checkpoint(self, block: Block) -> None:
        cp = self._sign(m.Checkpoint(block.height, block.hash, self.index))
        self._own_checkpoints[block.height] = block.hash
        self._out.append(Broadcast(cp))
        self._record_checkpoint(cp)

    def _on_checkpoint(self, cp: m.Checkpoint) -> None:
        if cp.height % self.genesis.params.checkpoint_interval != 0:
            raise m.InvalidMessage("checkpoint: not at a checkpoint height")
        self._note_peer(cp.sender, None, cp.height)
        self._record_checkpoint(cp)

    def _record_checkpoint(self, cp: m.Checkpoint) -> None:
        limit = self.head.height + self.config.window
        if not self.stable_checkpoint < cp.height <= limit:
            return
        votes = self._checkpoints.setdefault(cp.height, {})
        votes.setdefault(cp.sender, (cp.block_hash, cp.signature))
        own = self._own_checkpoints.get(cp.height)
        matching = sum(1 for digest, _ in votes.values() if digest == own)
        if own is not None and matching >= self._quorum:
            self._stabilise(cp.height)

    def _stabilise(self, height: int) -> None:
        """A quorum agrees on the block at `height`: forget everything at or below it."""
        self.stable_checkpoint = height
        self.counters["checkpoints_stable"] += 1
        for table in (self._checkpoints, self._own_checkpoints):
            for h in [h for h in table if h <= height]:
                del table[h]
        # Persisted promises at or below a stable checkpoint are void: drop them in one batch.
        low = max(1, self._gc_floor)
        deletes = [
            p + _h(h) for h in range(low, height + 1) for p in (PREFIX_ACCEPTED, PREFIX_PREPARED)
        ]
        done = [d for d, h in self._persisted_blocks.items() if h <= height]
        deletes += [PREFIX_BLOCK + d for d in done]
        for digest in done:
            del self._persisted_blocks[digest]
        self._gc_floor = height + 1
        self._out.append(Persist(puts=(), deletes=tuple(deletes)))

    # --- view change ------------------------------------------------------------------------

    def _start_view_change(self, new_view: int) -> None:
        assert new_view > self.view or (new_view == self.view and self.in_view_change)
        self.view = new_view
        self.in_view_change = True
        self.counters["view_changes"] += 1
        self._slots.clear()
        self._waiting.clear()
        self._deferred = None
        self._new_view = None
        self._propose_armed = False
        self._out.append(Persist(puts=((KEY_VIEW, encode([self.view, 1])),)))
        self._send_view_change()
        self._maybe_new_view(new_view)

    def _send_view_change(self) -> None:
        vc = self._sign(
            m.ViewChange(
                self.view, self.head.height, self.head.hash, self._head_cert,
                tuple(self._prepared[h] for h in sorted(self._prepared)), self.index,
            )
        )  # fmt: skip
        self._own_view_change = vc
        self._view_changes.setdefault(self.view, {})[self.index] = vc
        self._out.append(Broadcast(vc))
        timeout = min(
            self.genesis.params.view_change_timeout_ms << min(self._vc_attempts, 16),
            self.config.view_change_timeout_max_ms,
        )
        self._vc_attempts += 1
        self._out.append(SetTimer(Timer.VIEW_CHANGE, self._now + timeout))

    def _on_view_change(self, vc: m.ViewChange) -> None:
        self._note_peer(vc.sender, None, vc.committed_height)
        if vc.new_view < self.view or (vc.new_view == self.view and not self.in_view_change):
            if self._new_view is not None:
                self._out.append(Send(vc.sender, self._new_view))  # it missed our NewView
            return
        if vc.new_view > self.view + VIEW_AHEAD_MAX:
            return
        check_view_change(vc, self.genesis, self.config.window)
        self._view_changes.setdefault(vc.new_view, {})[vc.sender] = vc
        above = {s for v, d in self._view_changes.items() if v > self.view for s in d}
        if len(above) >= self._weak:
            # f+1 replicas want a later view: at least one honest one does, so join the lowest.
            target = min(v for v, d in self._view_changes.items() if v > self.view and d)
            self._start_view_change(target)
            return
        self._maybe_new_view(vc.new_view)

    def _maybe_new_view(self, view: int) -> None:
        votes = self._view_changes.get(view, {})
        if view % self._n != self.index or view != self.view or not self.in_view_change:
            return
        if len(votes) < self._quorum:
            return
        chosen = tuple(votes[s] for s in sorted(votes)[: self._quorum])
        nv = self._sign(m.NewView(view, chosen, self.index))
        self._out.append(Broadcast(nv))
        self._install_new_view(nv)

    def _on_new_view(self, nv: m.NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and not self.in_view_change):
            return
        if nv.sender != nv.view % self._n:
            raise m.InvalidMessage("new-view: not from the primary of that view")
        senders = [vc.sender for vc in nv.view_changes]
        if len(set(senders)) != len(senders) or len(senders) < self._quorum:
            raise m.InvalidMessage(
                "new-view: needs a quorum of view changes from distinct replicas"
            )
        for vc in nv.view_changes:
            if vc.new_view != nv.view or not 0 <= vc.sender < self._n:
                raise m.InvalidMessage("new-view: a view change for another view")
            if not self._signature_ok(vc):
                raise m.InvalidMessage("new-view: a view change with a bad signature")
            check_view_change(vc, self.genesis, self.config.window)
        self._install_new_view(nv)

    def _install_new_view(self, nv: m.NewView) -> None:
        self.view = nv.view
        self.in_view_change = False
        self._new_view = nv
        self._slots.clear()
        self._waiting.clear()
        self._propose_armed = False
        for v in [v for v in self._view_changes if v <= nv.view]:
            del self._view_changes[v]
        self._out.append(Persist(puts=((KEY_VIEW, encode([self.view, 0])),)))
        self._out.append(CancelTimer(Timer.VIEW_CHANGE))
        self._last_progress_ms = self._now
        self.counters["new_views"] += 1
        selection = select(nv.view_changes, self.config.window)
        if self.head.height < selection.base_height:
            self._deferred = selection
            self._fetch(selection.base_sender, selection.base_height)
        else:
            self._install_selection(selection)

    def _install_selection(self, selection: Selection) -> None:
        """Treat the re-proposed blocks as pre-prepared in the new view, and vote for them."""
        for block in selection.blocks:
            if block.height <= self.head.height:
                continue
            parent = self._parent(block.height)
            if parent is None or block.header.prev_hash != parent.hash:
                self.counters["selection_mismatch"] += 1
                return
            try:
                check_block(
                    block, parent, self.genesis,
                    is_committed=self._committed_or_in_flight(block.height),
                    signatures_checked=self.pool,
                )  # fmt: skip
            except InvalidBlock:
                self.counters["selection_invalid"] += 1
                return
            self._accept(block, parent, None)
        self._replay_waiting()

    def _replay_waiting(self) -> None:
        """Give buffered pre-prepares another chance, lowest height first."""
        waiting = sorted(self._waiting.items())
        self._waiting.clear()
        for _, pp in waiting:
            if pp.view == self.view:
                self._on_buffered(pp)

    def _on_buffered(self, pp: m.PrePrepare) -> None:
        try:
            self._on_pre_prepare(pp)
        except m.InvalidMessage as exc:
            self._invalid(_reason(exc))

    # --- status, retransmission, state transfer --------------------------------------------

    def _broadcast_status(self) -> None:
        self._out.append(Broadcast(self._sign(m.Status(self.view, self.head.height, self.index))))

    def _on_status(self, status: m.Status) -> None:
        self._note_peer(status.sender, status.view, status.committed_height)
        if status.view < self.view and self._new_view is not None and not self.in_view_change:
            self._out.append(Send(status.sender, self._new_view))

    def _note_peer(self, peer: int, view: int | None, height: int) -> None:
        old_view, old_height = self._peer_status.get(peer, (0, 0))
        self._peer_status[peer] = (old_view if view is None else view, max(old_height, height))

    def _on_retransmit(self) -> None:
        self._out.append(SetTimer(Timer.RETRANSMIT, self._now + self.config.retransmit_ms))
        self._broadcast_status()
        self.pool.drop_expired(self._now - self.genesis.params.tx_ttl_ms)
        stalled = self.head.height == self._tick_height
        self._tick_height = self.head.height
        if not stalled:
            return
        if self.in_view_change and self._own_view_change is not None:
            self._out.append(Broadcast(self._own_view_change))
        elif self.pool and self.primary != self.index:
            # A relay may have been lost: make sure the primary has what we are waiting for.
            candidates = self.pool.candidates(self._in_flight())
            oldest = tuple(itertools.islice(candidates, RELAY_AGAIN_MAX))
            if oldest:
                self._out.append(Send(self.primary, self._sign(m.TxBatch(oldest, self.index))))
        for height in sorted(self._slots):
            slot = self._slots[height]
            for msg in (slot.own_pre_prepare, slot.own_prepare, slot.own_commit):
                if msg is not None:
                    self._out.append(Broadcast(msg))
        self._maybe_catch_up()

    def _peers_ahead(self) -> int:
        """The highest head that f+1 peers (so one honest peer at least) report: 0 if unknown."""
        heights = sorted((h for _, h in self._peer_status.values()), reverse=True)
        return heights[self._weak - 1] if len(heights) >= self._weak else 0

    def _maybe_catch_up(self) -> None:
        """If f+1 peers (so one honest) are ahead of our head, fetch the blocks from one."""
        target = self._peers_ahead()
        if target <= self.head.height or self._fetching is not None:
            return
        ahead = [p for p, (_, h) in sorted(self._peer_status.items()) if h >= target]
        fresh = [p for p in ahead if p not in self._bad_peers] or ahead
        if not [p for p in ahead if p not in self._bad_peers]:
            self._bad_peers.clear()
        self._fetch(fresh[self.head.height % len(fresh)], target)

    def _fetch(self, peer: int, target: int) -> None:
        if self._fetching is not None or peer == self.index:
            return
        last = min(target, self.head.height + self.config.fetch_blocks_max)
        self._fetching = peer
        self._out.append(FetchBlocks(peer, self.head.height + 1, last))
        self._out.append(SetTimer(Timer.FETCH, self._now + self.config.fetch_timeout_ms))

    def _on_blocks_fetched(self, peer: int, fetched: tuple[tuple[Block, Certificate], ...]) -> None:
        if self._fetching != peer:
            return  # an answer we no longer wait for
        self._fetching = None
        self._out.append(CancelTimer(Timer.FETCH))
        applied = 0
        for block, cert in fetched:
            if block.height <= self.head.height:
                continue
            try:
                _check_certified(block, cert, self.head, self.genesis)
            except InvalidBlock:
                self._bad_peers.add(peer)
                self.counters["fetch_invalid"] += 1
                break
            self._apply_commit(block, cert)
            applied += 1
        if not applied:
            self._bad_peers.add(peer)
            self.counters["fetch_failures"] += 1
            return
        self._bad_peers.discard(peer)
        if self._deferred is not None and self.head.height < self._deferred.base_height:
            self._fetch(self._deferred.base_sender, self._deferred.base_height)
        else:
            self._maybe_catch_up()

    # --- timers -----------------------------------------------------------------------------

    def _on_timeout(self, timer: Timer) -> None:
        match timer:
            case Timer.PROPOSE:
                self._propose_armed = False
            case Timer.RETRANSMIT:
                self._on_retransmit()
            case Timer.FETCH:
                if self._fetching is not None:
                    self._on_blocks_fetched(self._fetching, ())
            case Timer.PROGRESS:
                self._progress_deadline = None
                if self.in_view_change or not self._is_busy():
                    return
                if self._peers_ahead() > self.head.height:
                    # We lag (one honest peer at least is ahead): catching up is what is
                    # missing, not a primary. Asking alone for a view change would leave us
                    # out of every quorum until the others change view.
                    self._last_progress_ms = self._now
                    self._maybe_catch_up()
                    return
                self._start_view_change(self.view + 1)
            case Timer.VIEW_CHANGE:
                if not self.in_view_change:
                    return
                # A quorum asked for this view or a later one, yet no NewView came: its
                # primary failed, move on. With less support, ask again rather than run ahead
                # alone (a lone replica in a higher view helps no quorum).
                support = {s for v, d in self._view_changes.items() if v >= self.view for s in d}
                if len(support) >= self._quorum:
                    self._start_view_change(self.view + 1)
                else:
                    self._send_view_change()

    def _is_busy(self) -> bool:
        return bool(self.pool) or bool(self._slots) or self._deferred is not None

    def _arm_progress(self) -> None:
        """Keep the PROGRESS timer at last progress + timeout while there is pending work."""
        busy = self._is_busy() and not self.in_view_change
        if busy and not self._busy:
            self._last_progress_ms = self._now
        self._busy = busy
        deadline = self._last_progress_ms + self.genesis.params.view_change_timeout_ms
        if busy and deadline != self._progress_deadline:
            self._progress_deadline = deadline
            self._out.append(SetTimer(Timer.PROGRESS, deadline))
        elif not busy and self._progress_deadline is not None:
            self._progress_deadline = None
            self._out.append(CancelTimer(Timer.PROGRESS))


def _check_certified(block: Block, cert: Certificate, head: ChainHead, genesis: Genesis) -> None:
    """A fetched block is trusted only if it extends our head and carries a valid certificate."""
    header = block.header
    if header.height != head.height + 1 or header.prev_hash != head.hash:
        raise InvalidBlock("fetched block does not extend the head")
    if header.history_root != head.history.root():
        raise InvalidBlock("fetched block has a wrong history root")
    check_body(block)
    verify_certificate(cert, block, genesis)


def _reason(exc: Exception) -> str:
    """A short counter label from an error message ("pre-prepare: ..." -> "pre-prepare")."""
    return str(exc).split(":")[0].replace(" ", "_")


def config_window(config: ReplicaConfig | None) -> int:
    return (config or ReplicaConfig()).window


def _decode_own_block(raw: bytes) -> Block:
    return decode_block(raw)
