"""The block store: certified blocks and their indexes in one LevelDB, one synced batch per block.

This module owns everything CityLedger keeps on disk, and writes all of it; its reads are split
by what they read: ledger/records.py (txs and records), ledger/rulestore.py (rule state,
outcomes, alerts). It and `ledger.leveldb` (which opens the LevelDB and converts its errors)
are the only ones that import plyvel.
It must never accept a block that does not extend its head, never write part of a block, and
never let a plyvel or decoding exception escape: the world's faults surface as `StoreError`
(a damaged or foreign store) or `InvalidBlock` (a block that does not extend the head).

The key layout (one-byte prefixes; heights big-endian, so byte order is height order) is
ledger/storelayout.py's docstring.

Block h's batch holds: B, C, H of block h, T and X of each of its txs, R of each accepted one,
the rule-state, outcome and alert entries (ledger/rulestore.py), the N nodes that appending
leaf h completes (plus leaf 0 for h = 1), and the new head pointer.
LevelDB applies a batch atomically and replays its log on start, so after a crash (even
kill -9) the store holds exactly the blocks whose `append` returned, plus possibly the one in
flight, never half a block.

Opening reads the meta, the head pointer, the head block and certificate and O(log n) history
nodes, whatever the length of the chain. `BlockStore.open_for_audit` skips the head checks so
that `ledger.verify` can name the first bad height of a damaged store.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import plyvel

from ledger import crypto, merkle
from ledger import tx as txs
from ledger.block import (
    HEIGHT_MAX,
    Block,
    Certificate,
    ChainHead,
    check_block,
    check_body,
    check_links,
    decode_block,
    decode_certificate,
    verify_certificate,
)
from ledger.errors import InvalidBlock, StoreError
from ledger.genesis import Genesis
from ledger.gov.config import Config as GovConfig
from ledger.gov.history import Configs
from ledger.kinds.execute import Executed, Getter, Overlay, check_outcomes, execute
from ledger.kinds.risks import Alert
from ledger.leveldb import AUDIT_CACHE_BYTES, Reader, init_or_check_meta, open_db
from ledger.primitives import DIGEST_BYTES
from ledger.records import Records
from ledger.rulestore import RuleStateReads, StateWrites, block_rules, state_writes
from ledger.storelayout import (
    BLOCK,
    CERT,
    HASH,
    HEAD,
    HEIGHT_BYTES,
    TX,
    TX_BYTES,
    BlockWrite,
    StateWrite,
    Step,
    height_bytes,
    location_bytes,
    node_key,
    record_prefix,
)  # fmt: skip


class PendingWrite:
    """A checked batch of steps, made by `BlockStore.prepare`, not yet on disk."""

    def __init__(self, batch: Any, base: ChainHead | None, head: ChainHead, path: Path) -> None:
        self._batch = batch
        self._path = path
        self.base = base  # the store's head when it was prepared
        self.head = head  # the head once it is written
        self.written = False
        self.alerts: list[Alert] = []  # what risk monitoring raised for its blocks
        self.state_writes: StateWrites = {}  # the rule state its blocks wrote

    def write(self) -> None:
        """The one synced LevelDB write of the whole batch (atomic: all of it or none)."""
        assert not self.written
        try:
            self._batch.write()
        except plyvel.Error as exc:
            raise StoreError(f"{self._path}: writing failed: {exc}") from None
        self.written = True


class BlockStore:
    """An open block store. Not thread-safe: one owner (the node, or a verifier) at a time."""

    def __init__(self, db: Any, path: Path, genesis: Genesis, head: ChainHead | None) -> None:
        self._db = db
        self._path = path
        self._genesis = genesis
        self._head = head  # None when opened for audit: the head is then not trusted
        self._reader = Reader(db, path)
        self._records = Records(self._reader)
        self._rules = RuleStateReads(self._reader)
        # The configurations of this chain the store's checks use (ledger/gov/history.py): a
        # block's links and certificate are checked against the set of its own epoch.
        self._configs = Configs(genesis)

    # --- Opening and closing -----------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, genesis: Genesis) -> "BlockStore":
        """Open (creating if missing) the store of `genesis`'s chain; check meta and the head."""
        existed = (path / "CURRENT").exists()  # a LevelDB was here: never start it afresh
        db = open_db(path, create=True)
        try:
            init_or_check_meta(db, path, genesis, create=not existed)
            store = cls(db, path, genesis, None)
            store._head = store._load_head()
        except BaseException:
            db.close()
            raise
        return store

    @classmethod
    def open_for_audit(cls, path: Path, genesis: Genesis) -> "BlockStore":
        """Open an existing store for `ledger.verify` without trusting its head: only the meta
        is checked, reads work, `head` and `append` refuse. A damaged head is then reported by
        `verify_chain` at its height instead of failing here."""
        db = open_db(path, create=False, cache_bytes=AUDIT_CACHE_BYTES)
        try:
            init_or_check_meta(db, path, genesis, create=False)
        except BaseException:
            db.close()
            raise
        return cls(db, path, genesis, None)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    def _load_head(self) -> ChainHead:
        """The checked head: its block and certificate, and a history frontier that agrees
        with the head block's history root, all in O(log n) reads."""
        height, head_hash = self._head_pointer_or_raise()
        if height == 0:
            if head_hash != self._genesis.hash:
                raise StoreError(f"{self._path}: the head pointer names no block")
            return ChainHead.genesis(self._genesis)
        try:
            return self._check_head(height, head_hash)
        except (InvalidBlock, StoreError) as exc:
            raise StoreError(f"{self._path}: the head block {height} is damaged: {exc}") from None

    def _check_head(self, height: int, head_hash: bytes) -> ChainHead:
        raw, raw_cert = self.raw_block(height), self.raw_certificate(height)
        if raw is None or raw_cert is None:
            raise StoreError("the block or its certificate is missing")
        block = decode_block(raw)
        if block.height != height or block.hash != head_hash:
            raise StoreError("it is not the block the head pointer names")
        check_body(block)  # its txs are the ones its header (and so its certificate) commits to
        in_force = self._configs.of_block(self.rule_state, height).members  # the block's epoch
        verify_certificate(decode_certificate(raw_cert), block, in_force)
        before = merkle.Frontier.from_nodes(self._node_or_raise, height)
        if before.root() != block.header.history_root:
            raise StoreError("the stored history nodes disagree with its history root")
        frontier, completed = before.append_with_nodes(block.hash)
        if any(self.history_node(n.level, n.index) != n.digest for n in completed):
            raise StoreError("the stored history nodes it completed are damaged")
        return ChainHead(height, block.hash, block.header.timestamp_ms, frontier)

    # --- The head ------------------------------------------------------------------------------

    @property
    def head(self) -> ChainHead:
        if self._head is None:
            raise StoreError(f"{self._path} is open for audit: its head is not trusted")
        return self._head

    @property
    def height(self) -> int:
        return self.head.height

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    @property
    def path(self) -> Path:
        return self._path

    def head_pointer(self) -> tuple[int, bytes] | None:
        """The head pointer as stored (height, block hash), unchecked; for verifiers."""
        raw = self._reader.get(HEAD)
        if raw is None:
            return None
        if len(raw) != HEIGHT_BYTES + DIGEST_BYTES:
            raise StoreError(f"{self._path}: the head pointer is damaged")
        return int.from_bytes(raw[:HEIGHT_BYTES], "big"), raw[HEIGHT_BYTES:]

    def _head_pointer_or_raise(self) -> tuple[int, bytes]:
        pointer = self.head_pointer()
        if pointer is None:
            raise StoreError(f"{self._path}: the head pointer is missing")
        if pointer[0] > HEIGHT_MAX:
            raise StoreError(f"{self._path}: the head pointer is damaged")
        return pointer

    def last_stored_height(self) -> int:
        """The highest height any block or certificate is stored at (0 if none), unchecked."""
        highest = 0
        for prefix in (BLOCK, CERT):
            for key in self._reader.keys(prefix, reverse=True, limit=1):
                highest = max(highest, int.from_bytes(key[len(prefix) :], "big"))
        return highest

    # --- Appending -----------------------------------------------------------------------------

    def append(self, block: Block, certificate: Certificate) -> None:
        """Persist a certified block that extends the head, with every index, in one synced
        batch; raise `InvalidBlock` (store unchanged) for anything else. Tx signatures are not
        re-checked: consensus validated them, and state transfer relies on the certificate."""
        self.write([BlockWrite(block, certificate)])

    def write(self, steps: Sequence[Step]) -> None:
        """Carry out `steps` in order as one atomic, synced LevelDB batch: replica state writes
        (`StateWrite`) and certified blocks, each block extending the head left by the blocks
        before it (checked as `append` checks one). Raise `InvalidBlock` (store unchanged) if
        one does not."""
        pending = self.prepare(steps)
        pending.write()
        self.advance(pending)

    def prepare(self, steps: Sequence[Step]) -> "PendingWrite":
        """Check `steps` (as `write` does) and build their batch, writing nothing: the caller
        runs `PendingWrite.write()` (the fsync: any thread may, plyvel lets go of the GIL),
        then `advance`. Nothing else may write to the store in between."""
        head = self.head
        in_batch: set[bytes] = set()  # tx ids of the blocks of this batch, not yet in LevelDB
        state = Overlay(self.rule_state)  # the rule state after the blocks of this batch
        alerts: list[Alert] = []  # the risk alerts the batch's blocks raise
        written: StateWrites = {}

        def is_committed(tx_id: bytes) -> bool:
            return tx_id in in_batch or self.has_tx(tx_id)

        try:
            batch = self._db.write_batch(sync=True)
            for step in steps:
                if isinstance(step, StateWrite):
                    for key in step.deletes:
                        batch.delete(self._CONSENSUS + key)
                    for key, value in step.puts:
                        batch.put(self._CONSENSUS + key, value)
                    continue
                # The configuration of the block's own height, from the store's history.
                config = self._configs.of_block(state.get, step.block.height)
                checked = self._check_append(step, head, is_committed, state.get, config)
                nodes, head, executed = checked
                entries, raised = block_rules(state, step.block, executed, self._genesis, config)
                self._put_block(batch, step.block, step.certificate, nodes, entries)
                alerts.extend(raised)
                written.update(state_writes(state, entries))
                in_batch.update(t.tx_id for t in step.block.txs)
        except plyvel.Error as exc:
            raise StoreError(f"{self._path}: preparing a write failed: {exc}") from None
        pending = PendingWrite(batch, self.head, head, self._path)
        pending.alerts = alerts
        pending.state_writes = written
        return pending

    def advance(self, pending: "PendingWrite") -> None:
        """Take the head `pending` leaves, once its write is done."""
        assert pending.written, "write, then advance"
        assert pending.base is self._head, "one write at a time, in order"
        self._rules.written(pending.state_writes)
        self._head = pending.head

    def _check_append(
        self, step: BlockWrite, head: ChainHead, is_committed: Callable[[bytes], bool],
        state: Getter, config: GovConfig,
    ) -> tuple[list[merkle.Node], ChainHead, Executed]:  # fmt: skip
        """The history nodes the block completes, the head after it and its execution against
        `state` under `config` (in force before it: its epoch's); raise `InvalidBlock` unless
        it is a certified block that validly extends `head` with the outcomes its txs get."""
        block, certificate = step.block, step.certificate
        # Pair checks of in-memory objects: what gets indexed must be what gets stored. A tx
        # that `decode_tx` parsed got its id from its own bytes (and is frozen): not re-hashed.
        ids = [t.tx_id if t._parsed else crypto.sha256(t.raw) for t in block.txs]
        if block.hash != block.header.hash() or ids != [t.tx_id for t in block.txs]:
            raise InvalidBlock(f"block {block.height}: hashes do not match its content")
        if step.txs_checked and step.writes is not None:  # the replica's execution of it
            check_links(block, head, config.members)
            executed = Executed(block.outcomes, step.writes)
        elif step.txs_checked:
            check_links(block, head, config.members)
            # The writes are needed, and the outcomes pair-checked against the replica's.
            time_ms, height = block.header.timestamp_ms, block.height
            executed = execute(state, block.txs, self._genesis, time_ms, height, config=config)
            check_outcomes(block.outcomes, executed, block.height)
        else:
            executed = check_block(
                block, head, self._genesis, is_committed=is_committed,
                signatures_checked=frozenset(ids), state=state, config=config,
            )  # fmt: skip
        verify_certificate(certificate, block, config.members)
        nodes: list[merkle.Node] = []
        if block.height == 1:  # leaf 0 (the genesis hash) is stored with block 1
            nodes.extend(merkle.Frontier.empty().append_with_nodes(self._genesis.hash)[1])
        history, completed = head.history.append_with_nodes(block.hash)
        nodes.extend(completed)
        after = ChainHead(block.height, block.hash, block.header.timestamp_ms, history)
        return nodes, after, executed

    @staticmethod
    def _put_block(
        batch: Any, block: Block, cert: Certificate, nodes: list[merkle.Node],
        entries: dict[bytes, bytes],
    ) -> None:  # fmt: skip
        height = height_bytes(block.height)
        batch.put(BLOCK + height, block.encode())
        batch.put(CERT + height, cert.encode())
        batch.put(HASH + block.hash, height)
        for index, (t, code) in enumerate(zip(block.txs, block.outcomes, strict=True)):
            location = location_bytes(block.height, index)
            batch.put(TX + t.tx_id, location)
            batch.put(TX_BYTES + t.tx_id, location + t.raw)
            if not code:  # a refused tx is recorded, but is no version of its record
                batch.put(record_prefix(t.key) + location, t.tx_id)
        for key, value in entries.items():  # rule state, outcomes, alerts (ledger/rulestore.py)
            batch.put(key, value)
        for node in nodes:
            batch.put(node_key(node.level, node.index), node.digest)
        batch.put(HEAD, height + block.hash)

    # --- Blocks and certificates ---------------------------------------------------------------

    def raw_block(self, height: int) -> bytes | None:
        return self._reader.get(BLOCK + height_bytes(height)) if 1 <= height <= HEIGHT_MAX else None

    def raw_certificate(self, height: int) -> bytes | None:
        return self._reader.get(CERT + height_bytes(height)) if 1 <= height <= HEIGHT_MAX else None

    def block(self, height: int) -> Block | None:
        raw = self.raw_block(height)
        return None if raw is None else self._decode_block(height, raw)

    def _checked_block(self, height: int) -> Block:
        raw = self.raw_block(height)
        if raw is None:
            raise StoreError(f"{self._path}: block {height} is missing")
        return self._decode_block(height, raw)

    def _decode_block(self, height: int, raw: bytes) -> Block:
        try:
            block = decode_block(raw)
            check_body(block)  # pair check after the read: a damaged body is never returned
        except InvalidBlock as exc:
            raise StoreError(f"{self._path}: stored block {height} is damaged: {exc}") from None
        if block.height != height:
            raise StoreError(f"{self._path}: block stored at {height} says height {block.height}")
        return block

    def certificate(self, height: int) -> Certificate | None:
        raw = self.raw_certificate(height)
        if raw is None:
            return None
        try:
            return decode_certificate(raw)
        except InvalidBlock as exc:
            raise StoreError(f"{self._path}: certificate {height} is damaged: {exc}") from None

    def iter_certified(self, start: int, end: int) -> Iterator[tuple[Block, Certificate]]:
        """Blocks start..end inclusive (end clamped to the head) with their certificates."""
        if start < 1:
            raise ValueError(f"heights start at 1, not {start}")
        for height in range(start, min(end, self.height) + 1):
            cert = self.certificate(height)
            if cert is None:
                raise StoreError(f"{self._path}: certificate {height} is missing")
            yield self._checked_block(height), cert

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self._reader.get(HASH + block_hash)
        if raw is None:
            return None
        return int.from_bytes(
            self._reader.checked_length(HASH + block_hash, raw, HEIGHT_BYTES), "big"
        )

    # --- Reads of txs and records (ledger/records.py), of the rule state, outcomes and alerts
    # (ledger/rulestore.py): what each answers is documented there.

    def has_tx(self, tx_id: bytes) -> bool:
        return self._records.has_tx(tx_id)

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        return self._records.tx_location(tx_id)

    def tx(self, tx_id: bytes) -> txs.Transaction | None:
        return self._records.tx(tx_id)

    def indexed_tx(self, tx_id: bytes) -> tuple[int, int, bytes] | None:
        return self._records.indexed_tx(tx_id)

    def record_versions(
        self, key: str, limit: int, after: tuple[int, int] | None = None
    ) -> list[tuple[int, int, bytes]]:
        return self._records.versions(key, limit, after)

    def record_version_txs(
        self, key: str, limit: int, after: tuple[int, int] | None = None
    ) -> list[tuple[int, int, txs.Transaction]]:
        return self._records.version_txs(key, limit, after)

    def record_keys(self, low: str, high: str | None, limit: int) -> list[str]:
        return self._records.keys(low, high, limit)

    def latest_record(self, key: str) -> tuple[int, int, txs.Transaction] | None:
        return self._records.latest(key)

    def record_entry(self, key: str, height: int, index: int) -> bytes | None:
        return self._records.entry(key, height, index)

    def rule_state(self, key: bytes) -> Any:
        return self._rules.get(key)

    def rule_states(self, prefix: bytes, limit: int) -> list[tuple[bytes, Any]]:
        return self._rules.entries(prefix, limit)

    def tx_outcome(self, tx_id: bytes) -> str:
        return self._rules.tx_outcome(tx_id)

    def alerts(
        self, first_height: int, limit: int, kind: str | None = None,
        after: tuple[int, int] | None = None,
    ) -> list[tuple[int, Alert]]:  # fmt: skip
        return self._rules.alerts(first_height, limit, kind, after)

    def alerts_at(self, height: int) -> list[Alert]:
        return self._rules.block_alerts(height)

    # --- The history tree ----------------------------------------------------------------------

    def history_node(self, level: int, index: int) -> bytes | None:
        if not (0 <= level < merkle.LEVELS_MAX and 0 <= index < 2**64):
            return None
        key = node_key(level, index)
        raw = self._reader.get(key)
        return None if raw is None else self._reader.checked_length(key, raw, DIGEST_BYTES)

    def _node_or_raise(self, level: int, index: int) -> bytes:
        node = self.history_node(level, index)
        if node is None:
            raise StoreError(f"history node ({level}, {index}) is missing")
        return node

    def _subtree_root(self, start: int, end: int) -> bytes:
        return merkle.subtree_root_from_nodes(self._node_or_raise, start, end)

    def history_inclusion_proof(self, size: int, index: int) -> list[bytes]:
        """Proof that leaf `index` (block `index`'s hash) is in the history tree of `size`
        leaves, i.e. under the history root of block `size`; O(log n) node reads."""
        self._check_history_size(size)
        return merkle.inclusion_proof_by(self._subtree_root, size, index)

    def history_consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between history trees of `old_size` and `new_size`."""
        self._check_history_size(new_size)
        return merkle.consistency_proof_by(self._subtree_root, old_size, new_size)

    def _check_history_size(self, size: int) -> None:
        if not 1 <= size <= self.height + 1:
            raise ValueError(f"the history tree has sizes 1..{self.height + 1}, not {size}")

    # --- Consensus state (added for node/: the replica's `Persist` actions) --------------------
    # The replica's own small state (its view, what it prepared) under a prefix of its own,
    # b"P", that no block, index or history key uses. Each write is one synced batch, so a
    # Persist is durable before the node sends the messages that follow it.

    _CONSENSUS: Final = b"P"

    def consensus_state(self) -> dict[bytes, bytes]:
        """Every entry the replica persisted (handed back to it on restart)."""
        prefix = self._CONSENSUS
        try:
            with self._db.iterator(prefix=prefix) as it:
                return {key[len(prefix) :]: value for key, value in it}
        except plyvel.Error as exc:
            raise StoreError(f"{self._path}: reading the consensus state failed: {exc}") from None

    def write_consensus_state(
        self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = ()
    ) -> None:
        """Delete then put replica state entries, in one synced batch."""
        self.write([StateWrite(tuple(puts), tuple(deletes))])
