"""The PBFT replica (Castro & Liskov, adapted to a chain of blocks): a sans-I/O state machine.

Contract with the shell (the node, or the simulator): build it from the store's committed
head (`ChainHead.genesis(g)` for an empty store) and that head's certificate (None at height
0), `is_committed(tx_id)` (asks the store) and `persisted` (every entry of earlier `Persist`
actions still on disk); hand it each event with `handle(event, now_ms)` and carry out the
actions it returns, in order (consensus/events.py says which events, and how).

The protocol (PBFT with the block height as sequence number, docs/protocol.md section 13):
the normal case runs here, up to `pipeline_depth` heights in flight within the window; no progress,
or a tx passed over (censorship.py), starts a view change (viewstate.py, reproposal.py); a replica
left behind catches up (catchup.py). Epochs (epoch.py): a block ending one commits before any above.

Each kind of state has one owner, which returns values; this class holds them, glues them,
and alone emits actions (`Outbox`): `Chain`, `TxPool`, `Log`, `Journal`, `Proposer`,
`Checkpoints`, `ViewState`, `CatchUp`, `Inbox` (which peer messages come in), `Liveness`.
No field mirrors a timer: `_wanted_timers` derives each deadline from state.
"""

from collections import Counter
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger import crypto
from ledger import tx as txs
from ledger.block import Block, Certificate, ChainHead
from ledger.errors import InvalidBlock
from ledger.genesis import Genesis

from consensus import events as ev
from consensus import messages as m
from consensus.catchup import CatchUp, check_certified
from consensus.chain import Chain
from consensus.checkpoints import Checkpoints, StableProof
from consensus.config import ReplicaConfig
from consensus.epoch import Epoch
from consensus.inbox import Inbox
from consensus.instance import check_proposal
from consensus.journal import Journal
from consensus.liveness import Liveness
from consensus.log import Log
from consensus.outbox import Outbox
from consensus.pool import RELAY_AGAIN_MAX, TxPool
from consensus.proposer import Proposer
from consensus.rulestate import CommittedState
from consensus.shellview import ShellView
from consensus.viewstate import ViewState

__all__ = ["Replica", "ReplicaConfig"]


class Replica(ShellView):
    """One validator's PBFT replica (its contract: the module docstring). The shell reads only
    `ShellView`'s properties (consensus/shellview.py), `counters` and `epoch`."""

    def __init__(
        self, genesis: Genesis, index: int, key: Ed25519PrivateKey, head: ChainHead,
        is_committed: Callable[[bytes], bool], persisted: Mapping[bytes, bytes] | None = None,
        config: ReplicaConfig | None = None, head_certificate: Certificate | None = None,
        state: CommittedState | None = None,
    ) -> None:  # fmt: skip
        self.genesis = genesis
        self.config = cfg = config or ReplicaConfig()
        self.counters: Counter[str] = Counter()
        self._is_committed_in_store = is_committed
        self.chain = Chain(head, head_certificate, cfg.window)
        self.pool = TxPool(cfg.pool_capacity)
        self.log = Log(genesis, state)  # state: the committed rule state (None: in memory)
        # The set, quorums and parameters after the head; then ours at each boundary we commit.
        self.epoch = epoch = self.log.rules.epoch_at_head()
        assert 0 <= index < epoch.size, "`index`: our place in the set in force at the head"
        self.validator_id = epoch.members.validators[index].id
        self._public_key = crypto.public_key_bytes(key)
        self.retired = epoch.index_of(self.validator_id, self._public_key) is None  # votes none
        self.journal = Journal(head.height, cfg.window)
        self.proposer = Proposer(epoch.params, cfg.pipeline_depth, self.pool, self.log,
                                 is_committed)  # fmt: skip
        self.views = ViewState(epoch, index, cfg.view_change_timeout_max_ms)
        self.catchup = CatchUp(index, epoch.quorums, cfg.fetch_blocks_max, cfg.fetch_timeout_ms)
        self.liveness = Liveness(epoch.params, cfg.retransmit_ms)
        self._join(epoch, index, None)  # the owners of what the set decides
        self.out = Outbox(key, genesis.chain_id)
        self._now = 0
        # Rebuild what this replica promised before a restart, so it never votes otherwise.
        restored = self.journal.restore(persisted or {}, head, cfg.window)
        self.views.view, self.views.in_view_change = restored.view, restored.in_view_change
        self.log.restore(head, restored, epoch.members)
        self.checkpoints.restore(restored.stable)

    # --- the one entry point, and what it dispatches to -----------------------------------

    def handle(self, event: ev.Event, now_ms: int) -> list[ev.Action]:
        if self.retired:
            self.counters["retired_events"] += 1
            return []
        self._now = max(self._now, now_ms)
        height_before = self.chain.height
        if not self._is_busy():
            self.liveness.progressed(self._now)  # nothing waits, so nothing is late
        match event:
            case ev.Start():
                self._on_start()
            case ev.Received(message=msg):
                self._on_message(msg)
            case ev.Timeout(timer=timer):
                self.out.fired(timer)
                self._on_timeout(timer)
            case ev.ClientTxs(txs=batch, relayed=relayed):
                self._on_client_txs(batch, relayed=relayed)
            case ev.BlocksFetched(peer=peer, blocks=fetched):
                self._on_blocks_fetched(peer, fetched)
        propose_due = self._maybe_propose()
        out = self.out.take(self._wanted_timers(propose_due))
        self._check_postconditions(height_before, out)
        return out

    def _check_postconditions(self, height_before: int, out: list[ev.Action]) -> None:
        """What the replica promises after every event (a failure is our bug, not the world's)."""
        low, high = self.chain.height, self.chain.top
        assert low >= height_before, "the committed height only grows"
        committed = [a.block.height for a in out if isinstance(a, ev.CommitBlock)]
        assert committed == list(range(height_before + 1, low + 1)), "one block per height"
        assert self.log.within(low, high), "the log within the window"

    def _on_start(self) -> None:
        self.liveness.start(self._now)
        if self.views.at_boundary(self.chain.certificate):  # joining, or on a new key
            self._enter_view()
        self.out.broadcast(m.Status(self.view, self.chain.height, self.index))
        if self.in_view_change:
            self._send_view_change()
            return
        for height in sorted(self.log.slots):
            slot = self.log.slots[height]
            slot.vote(self.out.broadcast(slot.prepare_vote(self.view, self.index)))
        self._progress()

    def _on_message(self, msg: m.Message) -> None:
        if self.screen(msg):
            with self.inbox.refusals():
                self._dispatch(msg)

    def _dispatch(self, msg: m.Message) -> None:
        match msg:
            case m.PrePrepare():
                self._on_pre_prepare(msg)
            case m.Prepare() | m.Commit():
                self.log.slot(self.view, msg.height).add_vote(msg)
                self._progress()
            case m.Checkpoint():
                self._stabilise(self.checkpoints.record(msg, self.chain.top))  # if one is due
                self.catchup.note(msg.sender, None, msg.height)
            case m.ViewChange():
                self._on_view_change(msg)
            case m.NewView() if not self.views.is_stale(msg.view):
                self.views.check_new_view(msg, self.inbox.signatures, self.config.window)
                self._install_new_view(msg)
            case m.Status():
                self.catchup.note(msg.sender, msg.view, msg.committed_height)
                self.out.emit(*self.views.remind(msg.sender, msg.view))
            case m.BlockRequest():
                for block in self.log.known(msg.hashes):
                    self.out.send(msg.sender, m.BlockReply(block, self.index))
            case m.BlockReply() if self.views.wants(msg.block, self.chain.head, self.log.blocks):
                self.counters["blocks_fetched_by_hash"] += 1
                self.log.keep(msg.block)
                self._repropose()
            case m.BlockReply():
                self.counters["blocks_unwanted"] += 1  # late, a second holder's, or forged
            case m.TxBatch():
                raise m.InvalidMessage(m.Reason.NOT_FOR_REPLICA)

    # --- normal case ------------------------------------------------------------------------

    def _on_pre_prepare(self, pp: m.PrePrepare, *, own: bool = False) -> None:
        if self.retired or not (self.views.is_current(pp.view) and self.chain.takes(pp.height)):
            return  # (retired: by the block it just committed; it votes nothing from then on)
        check_proposal(pp, self.primary, self._now)
        accepted = self.log.accepted(pp.height)
        if accepted is not None:
            if accepted.hash != pp.block.hash:
                self.counters["equivocation"] += 1
            return
        end = self.log.epoch_end(self.chain.head)
        if end is not None and pp.height > end:
            return  # of the next epoch: judged once the block that ends this one commits
        parent = self.log.parent(pp.height, self.chain.head)
        if parent is None or self.views.reproposal is not None:
            self.log.hold(pp)
            return
        try:
            self._checked_parent(pp.block)
        except InvalidBlock as exc:
            raise m.InvalidMessage(m.Reason.INVALID_BLOCK, str(exc)) from None
        self._accept(pp.block, parent, pp if own else None)
        self._on_buffered(self.log.follower(pp.height, self.view))

    def _checked_parent(self, block: Block) -> ChainHead:
        return self.log.checked_parent(
            block, self.chain.head, self.genesis, self._is_committed_in_store, self.pool
        )

    def _on_buffered(self, pp: m.PrePrepare | None) -> None:
        with self.inbox.refusals():  # (None: nothing held; a replica behind rejoins here)
            if pp is not None:
                self._on_pre_prepare(pp)

    def _accept(self, block: Block, parent: ChainHead, own_pp: m.PrePrepare | None) -> None:
        """Pre-prepare `block` (it passed check_block against `parent`): persist the promise,
        then (the primary) propose it, and vote Prepare."""
        slot = self.log.accept(self.view, block, parent, own_pp, checked=True)
        self.out.emit(self.journal.accepted(self.view, block))
        if own_pp is not None:
            self.out.emit(ev.Broadcast(own_pp))
        slot.vote(self.out.broadcast(slot.prepare_vote(self.view, self.index)))
        self._progress()

    def _progress(self) -> None:
        """Prepared → send Commit (in height order) → commit, as far as the votes allow."""
        self.out.emit(*map(self.journal.prepared, self.log.newly_prepared(self._quorum)))
        for slot in self.log.prepared_run(self.chain.height):
            if slot.own_commit is None:
                slot.vote(self.out.broadcast(slot.commit_vote(self.view, self.index)))
        while (first := self.log.committable(self.chain.height, self._quorum)) is not None:
            assert first.block is not None
            self.liveness.committed(first.block, self._now)  # not by state transfer
            cert = first.certificate(self._quorum)
            self._apply_commit(first.block, cert, txs_checked=first.checked)

    def _apply_commit(
        self, block: Block, certificate: Certificate, *, txs_checked: bool = False
    ) -> None:
        """Append a certified block: the one way the head moves (consensus or state transfer)."""
        assert block.height == self.chain.height + 1
        self.out.emit(ev.CommitBlock(block, certificate, txs_checked))
        self.chain.advance(block, certificate)
        self.counters["blocks_committed"] += 1
        self.counters["txs_committed"] += len(block.txs)
        self.pool.remove([t.tx_id for t in block.txs])
        ends_epoch = self.log.committed(block)
        self.liveness.progressed(self._now)
        self.views.committed()
        if self.checkpoints.is_due(block.height):
            cp = self.out.broadcast(m.Checkpoint(block.height, block.hash, self.index))
            self._stabilise(self.checkpoints.own(cp, self.chain.top))
        if ends_epoch:
            self._enter_epoch()
        self._repropose()

    def _enter_epoch(self) -> None:
        """The block just committed ended the epoch: the next one's set (protocol 13.5)."""
        self.epoch = epoch = self.epoch.next(self.log.rules.config_after_head())
        self.counters["epochs_entered"] += 1
        index = epoch.index_of(self.validator_id, self._public_key)
        self.retired = index is None
        if index is not None:
            self._join(epoch, index, self.checkpoints.proof)
            self.log.new_view()  # votes counted in the old set are void
            if self.views.at_boundary(self.chain.certificate):  # a view of the old epoch
                self._enter_view()
            elif self.in_view_change:
                self._send_view_change()

    def _join(self, epoch: Epoch, index: int, stable: StableProof | None) -> None:
        """Take part in `epoch` as its validator `index` (view and stable checkpoint kept)."""
        self.index, self._quorum = index, epoch.quorums.commit
        self.inbox = Inbox(epoch, index, self.counters)
        self.checkpoints = Checkpoints(epoch.params.checkpoint_interval, self._quorum)
        self.checkpoints.restore(stable)
        self.views.new_epoch(epoch, index)
        self.catchup.new_epoch(index, epoch.quorums)
        self.proposer.params = epoch.params
        self.liveness.new_params(epoch.params)

    def _stabilise(self, stable: StableProof | None) -> None:
        """A quorum agrees on the block at `stable`: the persisted promises below are void."""
        if stable is not None:
            self.counters["checkpoints_stable"] += 1
            self.out.emit(self.journal.collect(stable))

    def _on_client_txs(self, batch: tuple[txs.Transaction, ...], *, relayed: bool) -> None:
        added = self.pool.add_all(batch, self._now)
        self.counters["txs_pooled"] += len(added)
        if added and not relayed:
            self.out.broadcast(m.TxBatch(added, self.index))

    # --- proposing --------------------------------------------------------------------------

    def _maybe_propose(self) -> int | None:
        """Propose every block that is due; return when the next one will be (None: none)."""
        while True:  # (each round: a block proposed here may end the epoch, or commit one)
            if self.primary != self.index or self.in_view_change or self.views.reproposal:
                return None
            if self.retired or self.log.epoch_end(self.chain.head) is not None:
                return None  # the next epoch's set certifies what follows it
            block = self.proposer.next_block(self.chain.head, self._now, self.view, self.index)
            if not isinstance(block, Block):
                return block
            # The primary's own proposal passes the same validation as a peer's.
            pp = self.out.sign(m.PrePrepare(self.view, block.height, block, self.index))
            self._on_pre_prepare(pp, own=True)
            # Accepted, or (a single validator is its own quorum) already committed.
            assert self.chain.height >= block.height or self.log.accepted(block.height) == block

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
        self.out.emit(self.journal.view(self.view, in_view_change=self.in_view_change))

    def _send_view_change(self) -> None:
        vc = self.views.view_change(self.chain.head, self.chain.certificate, self.log.prepared)
        self.views.own(self.out.broadcast(vc), self._now)

    def _on_view_change(self, vc: m.ViewChange) -> None:
        self.out.emit(*self.catchup.head_shown(vc, self.epoch, self.chain.height, self._now))
        join, reminders = self.views.on_view_change(vc, self.config.window)
        self.out.emit(*reminders)
        if join is not None:
            self._start_view_change(join)
        else:
            self._maybe_new_view()

    def _maybe_new_view(self) -> None:
        chosen = self.views.quorum_for_new_view()
        if chosen is not None:
            self._install_new_view(self.out.broadcast(m.NewView(self.view, chosen, self.index)))

    def _install_new_view(self, nv: m.NewView) -> None:
        self.views.install(nv, self.config.window)
        self._enter_view()
        self.liveness.new_view(self._now)
        self.counters["new_views"] += 1
        self._repropose()

    def _repropose(self) -> None:
        """Install the NewView's re-proposal once the head reached its base and its blocks are
        here (accepted in the new view, and voted for); until then fetch what is missing."""
        pending = self.views.reproposal
        if pending is None or self.retired:
            return
        if self.chain.height < pending.base_height:
            peer, base = pending.selection.base_sender, pending.base_height
            self.out.emit(*self.catchup.fetch_base(peer, self.chain.height, base, self._now))
            return
        chain = pending.ready(self.chain.head, self.log.blocks.get)
        if chain is None:
            for peer, hashes in pending.requests(self.chain.head, self.log.blocks.get):
                self.out.send(peer, m.BlockRequest(hashes, self.index))
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

    # --- timers: the deadlines, status, retransmission, state transfer ---------------------

    def _is_busy(self) -> bool:
        return bool(self.pool) or bool(self.log.slots) or self.views.reproposal is not None

    def _wanted_timers(self, propose_due: int | None) -> dict[ev.Timer, int | None]:
        """Every deadline, derived from the state (the shell is told when one changes)."""
        normal, busy = not self.in_view_change, self._is_busy()
        return {
            ev.Timer.PROPOSE: propose_due,
            **self.liveness.deadlines(self.pool, busy=busy, normal=normal),
            ev.Timer.VIEW_CHANGE: self.views.deadline_ms(),
            ev.Timer.FETCH: self.catchup.deadline_ms(),
        }

    def _on_timeout(self, timer: ev.Timer) -> None:
        """`timer`'s deadline, as last derived from the state, has come (PROPOSE: `handle`
        proposes whatever is due after every event)."""
        match timer:
            case ev.Timer.RETRANSMIT:
                self._on_retransmit()
            case ev.Timer.FETCH if self.catchup.fetching is not None:
                self._on_blocks_fetched(self.catchup.fetching.peer, ())
            case ev.Timer.PROGRESS if not self.in_view_change and self._is_busy():
                if self.catchup.peers_ahead() > self.chain.height:
                    # behind an honest peer: catch up (alone in a later view: in no quorum)
                    self.liveness.progressed(self._now)
                    self.out.emit(*self.catchup.catch_up(self.chain.height, self._now))
                else:
                    self._start_view_change(self.view + 1)
            case ev.Timer.CENSORSHIP if not self.in_view_change:
                self.counters["censorship_view_changes"] += 1
                self._start_view_change(self.view + 1)
            case ev.Timer.VIEW_CHANGE if self.in_view_change:
                if self.views.has_quorum_support():
                    self._start_view_change(self.view + 1)  # its primary failed: move on
                else:  # ask again rather than run ahead alone, and fetch (catchup.py, probe)
                    self._send_view_change()
                    self.out.emit(*self.catchup.probe(self.chain.height, self._now))

    def _on_retransmit(self) -> None:
        """Status to all, expired txs out; if the head did not move since the last tick, our
        latest messages again (one may have been lost) and a catch-up if peers are ahead."""
        self.out.broadcast(m.Status(self.view, self.chain.height, self.index))
        oldest = self._now - self.epoch.params.tx_ttl_ms
        if expired := self.pool.drop_expired(oldest, keep=self.proposer.in_flight()):
            self.counters["txs_expired"] += len(expired)
            self.out.emit(ev.TxsExpired(expired))
        if self.views.reproposal is not None:
            self.views.reproposal.tick()
            self._repropose()
        stalled = self.liveness.tick(self._now, self.chain.height)
        if stalled and self.in_view_change and self.views.sent is not None:
            self.out.emit(ev.Broadcast(self.views.sent.message))
        elif stalled or self.liveness.passed_over(self.pool, self._now):
            self._relay_to_primary()
        if stalled:
            self.out.emit(*map(ev.Broadcast, self.log.own_messages()))
            self.out.emit(*self.catchup.catch_up(self.chain.height, self._now))

    def _commit_fetched(self, block: Block, cert: Certificate) -> bool | None:
        """Commit a fetched block our epoch's set certified (None: had it; False: it retired us)."""
        if block.height <= self.chain.height:
            return None  # (a re-proposal may have committed it)
        check_certified(block, cert, self.chain.head, self.epoch.members)
        self._apply_commit(block, cert)
        return not self.retired

    def _relay_to_primary(self) -> None:
        """A relay may have been lost: make sure the primary has what we are waiting for."""
        if self.pool and self.primary != self.index and not self.in_view_change:
            oldest = self.pool.oldest(self.proposer.in_flight(), RELAY_AGAIN_MAX)
            if oldest:
                self.out.send(self.primary, m.TxBatch(oldest, self.index))

    def _on_blocks_fetched(self, peer: int, fetched: tuple[tuple[Block, Certificate], ...]) -> None:
        """Apply the fetched blocks in order, each checked against the set of its own epoch."""
        if self.catchup.apply_answer(peer, fetched, self._commit_fetched, self.counters):
            self._on_buffered(self.log.follower(self.chain.height, self.view))  # held above
            self.out.emit(*self.catchup.catch_up(self.chain.height, self._now))
