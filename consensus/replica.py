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
- Read-only: the properties below, `head`, `counters`, `screen(msg)`, `log_size()`.

The protocol (PBFT with the block height as sequence number, docs/protocol.md section 13):
this class runs the normal case, a block pre-prepared, prepared and committed in height order
with up to `pipeline_depth` heights in flight within the `window` above the head; no progress,
or a tx passed over by blocks with room (consensus/censorship.py), starts a view change
(consensus/viewstate.py); a NewView's re-proposed blocks that are missing here are asked for by
hash (consensus/reproposal.py); a replica left behind catches up (consensus/catchup.py).

This class owns the committed head and the pool, and glues the owners of every other kind of
state: `Log` (the heights in flight), `Journal` (what is persisted), `Proposer`, `Checkpoints`,
`ViewState` (the view and the view change), `CatchUp`, `SignatureCache`, `CensorshipWatch`,
`Ticker`. They return values; only this class signs and emits actions. Timers are not kept in
fields: `_wanted_timers` derives every deadline from the state.
"""

from collections import Counter
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger import tx as txs
from ledger.block import Block, Certificate, ChainHead
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis

from consensus import events as ev
from consensus import messages as m
from consensus.catchup import CatchUp
from consensus.censorship import CensorshipWatch
from consensus.checkpoints import Checkpoints
from consensus.config import ReplicaConfig
from consensus.instance import Instance, check_proposal
from consensus.journal import Journal
from consensus.log import Log
from consensus.pool import RELAY_AGAIN_MAX, TxPool
from consensus.proposer import Proposer
from consensus.rulestate import CommittedState
from consensus.signatures import SignatureCache
from consensus.timers import Ticker, Timers
from consensus.viewstate import ViewState

__all__ = ["Replica", "ReplicaConfig"]


class Replica:
    """One validator's PBFT replica. See the module docstring for the contract."""

    def __init__(
        self, genesis: Genesis, index: int, key: Ed25519PrivateKey, head: ChainHead,
        is_committed: Callable[[bytes], bool], persisted: Mapping[bytes, bytes] | None = None,
        config: ReplicaConfig | None = None, head_certificate: Certificate | None = None,
        state: CommittedState | None = None,
    ) -> None:  # fmt: skip
        assert 0 <= index < len(genesis.validators)
        assert (head_certificate is None) == (head.height == 0), "a head above 0 needs its cert"
        self.genesis = genesis
        self.index = index
        self.config = cfg = config or ReplicaConfig()
        self.counters: Counter[str] = Counter()
        self._key = key
        self._quorum = genesis.quorums.commit
        self._is_committed_in_store = is_committed
        self.head = head
        self._head_cert = head_certificate
        self.pool = TxPool(cfg.pool_capacity)
        self.log = Log(genesis, state)  # state: the committed rule state (None: in memory)
        self.journal = Journal(head.height, cfg.window)
        self.proposer = Proposer(genesis.params, cfg.pipeline_depth)
        self.checkpoints = Checkpoints(genesis.params.checkpoint_interval, self._quorum)
        self.views = ViewState(genesis, index, cfg.view_change_timeout_max_ms)
        self.catchup = CatchUp(index, genesis.quorums.weak, cfg.fetch_blocks_max,
                               cfg.fetch_timeout_ms)  # fmt: skip
        self.signatures = SignatureCache(genesis)
        self._now = 0
        self._out: list[ev.Action] = []
        self._last_progress_ms = 0  # the last commit, new view, or moment with nothing pending
        self.ticker = Ticker(cfg.retransmit_ms)
        self.censorship = CensorshipWatch(genesis.params)
        self._timers = Timers()
        # Rebuild what this replica promised before a restart, so it never votes otherwise.
        restored = self.journal.restore(persisted or {}, head, cfg.window)
        self.views.view, self.views.in_view_change = restored.view, restored.in_view_change
        self.log.restore(head, restored)

    # --- read-only views for the shell ----------------------------------------------------

    @property
    def view(self) -> int:
        return self.views.view

    @property
    def in_view_change(self) -> bool:
        return self.views.in_view_change

    @property
    def primary(self) -> int:
        return self.views.primary

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

    def screen(self, msg: m.Message) -> bool:
        """The cheap checks of a peer message, its signature last: False if the replica drops
        it (counted here, as `handle` would). The node screens a PrePrepare before it admits
        the block's unknown txs (hundreds of client signatures): a forgery costs one check."""
        per_height = msg if isinstance(msg, m.PrePrepare | m.Prepare | m.Commit) else None
        if msg.sender == self.index or not 0 <= msg.sender < len(self.genesis.validators):
            reason = m.Reason.SENDER
        elif per_height and not self._in_window(per_height.view, per_height.height):
            return False  # not a height we take part in, whatever its signature
        elif isinstance(msg, m.PrePrepare) and msg.sender != self.primary:
            reason = m.Reason.NOT_PRIMARY
        elif not self.signatures.verify(msg):
            reason = m.Reason.BAD_SIGNATURE
        else:
            return True
        self._invalid(reason)
        return False

    def log_size(self) -> int:
        """Entries in every per-height and per-view structure (bounded, whatever the length)."""
        return self.log.size() + self.checkpoints.size() + self.views.size() + len(self.signatures)

    # --- the one entry point --------------------------------------------------------------

    def handle(self, event: ev.Event, now_ms: int) -> list[ev.Action]:
        self._now = max(self._now, now_ms)
        height_before = self.head.height
        if not self._is_busy():
            self._last_progress_ms = self._now  # nothing waits, so nothing is late
        match event:
            case ev.Start():
                self._on_start()
            case ev.Received(message=msg):
                self._on_message(msg)
            case ev.Timeout(timer=timer):
                self._timers.fired(timer)
                self._on_timeout(timer)
            case ev.ClientTxs(txs=batch, relayed=relayed):
                self._on_client_txs(batch, relayed=relayed)
            case ev.BlocksFetched(peer=peer, blocks=fetched):
                self._on_blocks_fetched(peer, fetched)
        propose_due = self._maybe_propose()
        self._out += self._timers.update(self._wanted_timers(propose_due))
        out, self._out = self._out, []
        self._check_postconditions(height_before, out)
        return out

    def _check_postconditions(self, height_before: int, out: list[ev.Action]) -> None:
        """What the replica promises after every event (a failure is our bug, not the world's)."""
        low, high = self.head.height, self._window_top()
        assert low >= height_before, "the committed height only grows"
        committed = [a.block.height for a in out if isinstance(a, ev.CommitBlock)]
        assert committed == list(range(height_before + 1, low + 1)), "one block per height"
        assert self.log.within(low, high), "the log within the window"

    def _on_start(self) -> None:
        self._last_progress_ms = self._now
        self.censorship.new_view(self._now)
        self.ticker.start(self._now)
        self._broadcast(m.Status(self.view, self.head.height, self.index))
        if self.in_view_change:
            self._send_view_change()
            return
        for height in sorted(self.log.slots):
            self._vote_prepare(self.log.slots[height])
        self._progress()

    # --- messages ---------------------------------------------------------------------------

    def _on_message(self, msg: m.Message) -> None:
        if not self.screen(msg):
            return
        try:
            self._dispatch(msg)
        except m.InvalidMessage as exc:
            self._invalid(exc.reason)

    def _dispatch(self, msg: m.Message) -> None:
        match msg:
            case m.PrePrepare():
                self._on_pre_prepare(msg)
            case m.Prepare() | m.Commit():
                self.log.slot(self.view, msg.height).add_vote(msg)
                self._progress()
            case m.Checkpoint():
                if not self.checkpoints.is_due(msg.height):
                    raise m.InvalidMessage(m.Reason.CHECKPOINT_HEIGHT)
                self.catchup.note(msg.sender, None, msg.height)
                self._stabilise(self.checkpoints.record(msg, self._window_top()))
            case m.ViewChange():
                self._on_view_change(msg)
            case m.NewView() if not self.views.is_stale(msg.view):
                self.views.check_new_view(msg, self.signatures, self.config.window)
                self._install_new_view(msg)
            case m.Status():
                self.catchup.note(msg.sender, msg.view, msg.committed_height)
                self._out += self.views.remind(msg.sender, msg.view)
            case m.BlockRequest():
                for block in self.log.known(msg.hashes):
                    self._send(msg.sender, m.BlockReply(block, self.index))
            case m.BlockReply():
                pending = self.views.reproposal
                if pending and pending.wants(msg.block, self.head, self.log.blocks):
                    self.counters["blocks_fetched_by_hash"] += 1
                    self.log.keep(msg.block)
                    self._repropose()
                else:
                    self.counters["blocks_unwanted"] += 1  # late, a second holder's, or forged
            case m.TxBatch():
                raise m.InvalidMessage(m.Reason.NOT_FOR_REPLICA)

    def _invalid(self, reason: m.Reason) -> None:
        self.counters[f"invalid_message:{reason}"] += 1

    def _window_top(self) -> int:
        return self.head.height + self.config.window

    def _in_window(self, view: int, height: int) -> bool:
        return (
            view == self.view
            and not self.in_view_change
            and self.head.height < height <= self._window_top()
        )

    def _sign(self, msg: m.M) -> m.M:
        return m.sign(msg, self._key, self.genesis.chain_id)

    def _send(self, peer: int, msg: m.M) -> None:
        self._out.append(ev.Send(peer, self._sign(msg)))

    def _broadcast(self, msg: m.M) -> m.M:
        signed = self._sign(msg)
        self._out.append(ev.Broadcast(signed))
        return signed

    # --- normal case ------------------------------------------------------------------------

    def _on_pre_prepare(self, pp: m.PrePrepare, *, own: bool = False) -> None:
        if not self._in_window(pp.view, pp.height):
            return
        check_proposal(pp, self.primary, self._now)
        accepted = self.log.accepted(pp.height)
        if accepted is not None:
            if accepted.hash != pp.block.hash:
                self.counters["equivocation"] += 1
            return
        parent = self.log.parent(pp.height, self.head)
        if parent is None or self.views.reproposal is not None:
            self.log.waiting[pp.height] = pp
            return
        try:
            self._checked_parent(pp.block)
        except InvalidBlock as exc:
            raise m.InvalidMessage(m.Reason.INVALID_BLOCK, str(exc)) from None
        self._accept(pp.block, parent, pp if own else None)
        follower = self.log.waiting.pop(pp.height + 1, None)
        if follower is not None and follower.view == self.view:
            self._on_buffered(follower)

    def _checked_parent(self, block: Block) -> ChainHead:
        return self.log.checked_parent(
            block, self.head, self.genesis, self._is_committed_in_store, self.pool
        )

    def _on_buffered(self, pp: m.PrePrepare) -> None:
        try:
            self._on_pre_prepare(pp)
        except m.InvalidMessage as exc:
            self._invalid(exc.reason)

    def _accept(self, block: Block, parent: ChainHead, own_pp: m.PrePrepare | None) -> None:
        """Pre-prepare `block`: persist the promise, then (primary) propose and vote Prepare."""
        slot = self.log.accept(self.view, block, parent)
        slot.checked = True  # every caller ran check_block on it against `parent`
        self._out.append(self.journal.accepted(self.view, block))
        if own_pp is not None:
            slot.own_pre_prepare = own_pp
            self._out.append(ev.Broadcast(own_pp))
        self._vote_prepare(slot)
        self._progress()

    def _vote_prepare(self, slot: Instance) -> None:
        assert slot.block is not None
        prepare = self._broadcast(m.Prepare(self.view, slot.height, slot.block.hash, self.index))
        slot.own_prepare = prepare
        slot.add_prepare(self.index, slot.block.hash, prepare.signature)

    def _progress(self) -> None:
        """Prepared → send Commit (in height order) → commit, as far as the votes allow."""
        self._out += map(self.journal.prepared, self.log.newly_prepared(self._quorum))
        height = self.head.height + 1
        while (slot := self.log.slots.get(height)) is not None and slot.prepared:
            if slot.own_commit is None:
                assert slot.block is not None
                commit = self._broadcast(m.Commit(self.view, height, slot.block.hash, self.index))
                slot.own_commit = commit
                slot.add_commit(self.index, slot.block.hash, commit.signature)
            height += 1
        while (first := self.log.slots.get(self.head.height + 1)) and first.can_commit(
            self._quorum
        ):
            assert first.block is not None
            cert = first.certificate(self._quorum)
            self.censorship.committed(first.block, self._now)  # not by state transfer
            self._apply_commit(first.block, cert, txs_checked=first.checked)

    def _apply_commit(
        self, block: Block, certificate: Certificate, *, txs_checked: bool = False
    ) -> None:
        """Append a certified block: the one way the head moves (consensus or state transfer)."""
        assert block.height == self.head.height + 1
        self._out.append(ev.CommitBlock(block, certificate, txs_checked))
        self.head = self.head.advance(block)
        self._head_cert = certificate
        self.counters["blocks_committed"] += 1
        self.counters["txs_committed"] += len(block.txs)
        self.pool.remove([t.tx_id for t in block.txs])
        self.log.committed(block)
        self._last_progress_ms = self._now
        self.views.committed()
        if self.checkpoints.is_due(block.height):
            cp = self._broadcast(m.Checkpoint(block.height, block.hash, self.index))
            self._stabilise(self.checkpoints.own(cp, self._window_top()))
        self._repropose()

    def _stabilise(self, stable: int | None) -> None:
        """A quorum agrees on the block at `stable`: the persisted promises below are void."""
        if stable is not None:
            self.counters["checkpoints_stable"] += 1
            self._out.append(self.journal.collect(stable))

    def _on_client_txs(self, batch: tuple[txs.Transaction, ...], *, relayed: bool) -> None:
        added = tuple(t for t in batch if self.pool.add(t, self._now))
        self.counters["txs_pooled"] += len(added)
        if added and not relayed:
            self._broadcast(m.TxBatch(added, self.index))

    # --- proposing --------------------------------------------------------------------------

    def _maybe_propose(self) -> int | None:
        """Propose every block that is due; return when the next one will be (None: none)."""
        if self.primary != self.index or self.in_view_change or self.views.reproposal is not None:
            return None
        while isinstance(block := self.proposer.next_block(
            self.pool, self.log, self.head, self._now, self.view, self.index,
            self._is_committed_in_store,
        ), Block):  # fmt: skip
            # The primary's own proposal passes the same validation as a peer's.
            self._on_pre_prepare(self._sign(m.PrePrepare(self.view, block.height, block,
                                                         self.index)), own=True)  # fmt: skip
            # Accepted, or (a single validator is its own quorum) already committed.
            assert self.head.height >= block.height or self.log.accepted(block.height) == block
        return block

    def _in_flight(self) -> frozenset[bytes]:
        """Tx ids of every block accepted above the head in this view."""
        return self.proposer.in_flight(self.log.blocks_in_flight())

    # --- view change (the rules in consensus/viewstate.py and viewchange.py) --------------

    def _start_view_change(self, new_view: int) -> None:
        self.views.start(new_view)
        self.counters["view_changes"] += 1
        self._enter_view()
        self._send_view_change()
        self._maybe_new_view()

    def _enter_view(self) -> None:
        """The old view's instances are void (its prepared proofs stay): persist where we are
        before any vote of the new view leaves."""
        self.log.new_view()
        self._out.append(self.journal.view(self.view, in_view_change=self.in_view_change))

    def _send_view_change(self) -> None:
        vc = self.views.view_change(self.head, self._head_cert, self.log.prepared)
        self.views.own(self._broadcast(vc), self._now)

    def _on_view_change(self, vc: m.ViewChange) -> None:
        self.catchup.note(vc.sender, None, vc.committed_height)
        join, reminders = self.views.on_view_change(vc, self.config.window)
        self._out += reminders
        if join is not None:
            self._start_view_change(join)
        else:
            self._maybe_new_view()

    def _maybe_new_view(self) -> None:
        chosen = self.views.quorum_for_new_view()
        if chosen is not None:
            self._install_new_view(self._broadcast(m.NewView(self.view, chosen, self.index)))

    def _install_new_view(self, nv: m.NewView) -> None:
        self.views.install(nv, self.config.window)
        self._enter_view()
        self._last_progress_ms = self._now
        self.censorship.new_view(self._now)
        self.counters["new_views"] += 1
        self._repropose()

    def _repropose(self) -> None:
        """Install the NewView's re-proposal once the head reached its base and its blocks are
        here (accepted in the new view, and voted for); until then fetch what is missing."""
        pending = self.views.reproposal
        if pending is None:
            return
        if self.head.height < pending.base_height:
            self._out += self.catchup.fetch(pending.selection.base_sender, self.head.height,
                                            pending.base_height, self._now)  # fmt: skip
            return
        chain = pending.ready(self.head, self.log.blocks.get)
        if chain is None:
            for peer, hashes in pending.requests(self.head, self.log.blocks.get):
                self._send(peer, m.BlockRequest(hashes, self.index))
            return
        self.views.reproposal = None
        for block in chain:
            try:
                parent = self._checked_parent(block)
            except InvalidBlock:
                self.counters["selection_invalid"] += 1
                break
            self._accept(block, parent, None)
        for pp in self.log.take_waiting(self.view):
            self._on_buffered(pp)

    # --- status, retransmission, state transfer --------------------------------------------

    def _on_retransmit(self) -> None:
        self._broadcast(m.Status(self.view, self.head.height, self.index))
        oldest = self._now - self.genesis.params.tx_ttl_ms
        expired = self.pool.drop_expired(oldest, keep=self._in_flight())
        if expired:
            self.counters["txs_expired"] += len(expired)
            self._out.append(ev.TxsExpired(expired))
        if self.views.reproposal is not None:
            self.views.reproposal.tick()
            self._repropose()
        if not self.ticker.tick(self._now, self.head.height):
            if self.censorship.passed_over(self.pool, self._now):
                self._relay_to_primary()
            return
        if self.in_view_change and self.views.sent is not None:
            self._out.append(ev.Broadcast(self.views.sent.message))
        else:
            self._relay_to_primary()
        self._out += map(ev.Broadcast, self.log.own_messages())
        self._out += self.catchup.catch_up(self.head.height, self._now)

    def _relay_to_primary(self) -> None:
        """A relay may have been lost: make sure the primary has what we are waiting for."""
        if self.pool and self.primary != self.index and not self.in_view_change:
            oldest = self.pool.oldest(self._in_flight(), RELAY_AGAIN_MAX)
            if oldest:
                self._send(self.primary, m.TxBatch(oldest, self.index))

    def _on_blocks_fetched(self, peer: int, fetched: tuple[tuple[Block, Certificate], ...]) -> None:
        certified = self.catchup.on_answer(peer, fetched, self.head, self.genesis, self.counters)
        for block, cert in certified:
            if block.height > self.head.height:  # (a re-proposal may have committed it)
                self._apply_commit(block, cert)
        if certified:  # (`_apply_commit` fetched the rest of a re-proposal's base, if it lags)
            self._out += self.catchup.catch_up(self.head.height, self._now)

    # --- timers -----------------------------------------------------------------------------

    def _is_busy(self) -> bool:
        return bool(self.pool) or bool(self.log.slots) or self.views.reproposal is not None

    def _wanted_timers(self, propose_due: int | None) -> dict[ev.Timer, int | None]:
        """Every deadline, derived from the state (the shell is told when one changes)."""
        normal = not self.in_view_change
        timeout = self.genesis.params.view_change_timeout_ms
        progress = self._last_progress_ms + timeout if normal and self._is_busy() else None
        return {
            ev.Timer.PROPOSE: propose_due,
            ev.Timer.PROGRESS: progress,
            ev.Timer.CENSORSHIP: self.censorship.deadline_ms(self.pool) if normal else None,
            ev.Timer.VIEW_CHANGE: self.views.deadline_ms(),
            ev.Timer.RETRANSMIT: self.ticker.deadline_ms(),
            ev.Timer.FETCH: self.catchup.deadline_ms(),
        }

    def _on_timeout(self, timer: ev.Timer) -> None:
        """`timer`'s deadline, as last derived from the state, has come (PROPOSE: `handle`
        proposes whatever is due after every event)."""
        match timer:
            case ev.Timer.RETRANSMIT:
                self._on_retransmit()
            case ev.Timer.FETCH:
                if self.catchup.fetching is not None:
                    self._on_blocks_fetched(self.catchup.fetching.peer, ())
            case ev.Timer.PROGRESS if not self.in_view_change and self._is_busy():
                if self.catchup.peers_ahead() > self.head.height:
                    # We lag behind an honest peer: what is missing is catching up, not a
                    # primary (alone in a later view we would be out of every quorum).
                    self._last_progress_ms = self._now
                    self._out += self.catchup.catch_up(self.head.height, self._now)
                else:
                    self._start_view_change(self.view + 1)
            case ev.Timer.CENSORSHIP if not self.in_view_change:
                self.counters["censorship_view_changes"] += 1
                self._start_view_change(self.view + 1)
            case ev.Timer.VIEW_CHANGE if self.in_view_change:
                if self.views.has_quorum_support():
                    self._start_view_change(self.view + 1)  # its primary failed: move on
                else:
                    self._send_view_change()  # ask again rather than run ahead alone
