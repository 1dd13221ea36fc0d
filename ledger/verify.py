"""Chain verification: a stream of certified blocks checked from genesis, and a whole store audit.

This module owns the auditor's rules: every block is decoded from the bytes as stored or as
fetched, re-checked with `block.check_block` (links, roots, timestamps, proposer, every tx's
rules and signature) and `block.verify_certificate`, never trusted. `ChainVerifier` is that
core over any source of (block bytes, certificate bytes); `verify_chain` runs it over a
`BlockStore` and also checks every index entry the store holds for each block, so an altered
byte anywhere in the store is found and the first bad height named.

Every tx's outcome and every risk alert is recomputed from genesis: the verifier keeps the
rule state its own replay built (ledger/kinds: the size of the typed records' state, not of
the chain); `check_block` compares each block's outcomes with it and `verify_chain` the
stored alerts, so a wrong outcome or alert is named at its height like any other bad byte.

It must never import plyvel (it reads only through the `BlockStore` API), never write to the
store, and never hold more than one block's worth of txs: duplicate txs across blocks are
found through the store's tx index, not a set of every tx id seen.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ledger import merkle
from ledger.block import (
    Block,
    Certificate,
    ChainHead,
    check_block,
    decode_block,
    decode_certificate,
    verify_certificate,
)
from ledger.errors import InvalidBlock, LedgerError
from ledger.genesis import Genesis
from ledger.gov.history import config_of
from ledger.kinds.execute import Overlay
from ledger.kinds.risks import Alert
from ledger.rulestore import block_rules
from ledger.store import BlockStore

TxLocation = Callable[[bytes], tuple[int, int] | None]
"""``tx_location(tx_id)``: where the tx is already committed, (height, index), or None."""

Progress = Callable[[int, int], None]
"""``progress(height_done, height_total)``, called after each verified block."""

_OK: Final = ""


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of a verification; `reason` is empty when `ok`."""

    ok: bool
    blocks_checked: int
    txs_checked: int
    first_bad_height: int | None
    reason: str


@dataclass(frozen=True)
class VerifiedBlock:
    """A block that validly extends the chain, and the history nodes it completed."""

    block: Block
    certificate: Certificate
    history_nodes: tuple[merkle.Node, ...]
    alerts: tuple[Alert, ...] = ()  # the risk alerts its replay raised


class ChainVerifier:
    """Checks certified blocks in height order from a known head (the genesis by default).

    `tx_location` answers whether a tx id is already committed, and where: a tx of block h at
    index i is a duplicate when it is committed anywhere but (h, i). A stream of blocks being
    fetched into a store passes the store's `tx_location`; re-checking a store's own blocks
    finds each tx at exactly its own position.
    """

    def __init__(
        self, genesis: Genesis, tx_location: TxLocation, head: ChainHead | None = None
    ) -> None:
        self.genesis = genesis
        self.head = ChainHead.genesis(genesis) if head is None else head
        self._tx_location = tx_location
        self.state = Overlay(_nothing)  # the rule state its replay built (from genesis)
        self.blocks_checked = 0
        self.txs_checked = 0

    def feed(self, block_bytes: bytes, cert_bytes: bytes) -> VerifiedBlock:
        """Verify the next block from its bytes and advance the head. Raises `InvalidBlock`
        (or whatever `LedgerError` `tx_location` raises) and then leaves the head as it was."""
        block = decode_block(block_bytes)
        certificate = decode_certificate(cert_bytes)
        # The certificate first: a few signatures reject a forged block before its txs' many.
        # It is checked against the validators in force before the block (ledger/gov: the
        # set of its epoch), as its txs' signers are.
        config = config_of(self.state.get, self.genesis)  # the block's own: before it
        verify_certificate(certificate, block, config.members)
        height = block.height
        positions = {t.tx_id: i for i, t in enumerate(block.txs)}

        def committed_elsewhere(tx_id: bytes) -> bool:
            location = self._tx_location(tx_id)
            return location is not None and location != (height, positions[tx_id])

        executed = check_block(
            block, self.head, self.genesis, is_committed=committed_elsewhere,
            state=self.state.get, config=config,
        )  # fmt: skip
        # Advances the state.
        _, alerts = block_rules(self.state, block, executed, self.genesis, config)
        nodes: tuple[merkle.Node, ...] = ()
        if height == 1:  # leaf 0, the genesis hash, is part of the tree block 1 extends
            nodes = merkle.Frontier.empty().append_with_nodes(self.genesis.hash)[1]
        history, completed = self.head.history.append_with_nodes(block.hash)
        self.head = ChainHead(height, block.hash, block.header.timestamp_ms, history)
        self.blocks_checked += 1
        self.txs_checked += len(block.txs)
        return VerifiedBlock(block, certificate, nodes + completed, tuple(alerts))


def _nothing(_key: bytes) -> None:
    return None


def verify_chain(
    store: BlockStore, genesis: Genesis, progress: Progress | None = None
) -> VerifyReport:
    """Re-verify every block of `store` from genesis, and every index entry it holds.

    Works on a store opened normally or with `BlockStore.open_for_audit` (which does not trust
    the head, so a damaged head is reported here with its height). Stops at the first bad
    height. Blocks are checked up to the highest height that holds a block or a certificate,
    so a lost top block is found too; the head pointer must then name that last block, and a
    bad pointer is reported at that height (block and certificate are written in one batch,
    so a pointer beyond them is the pointer's fault, not two lost entries').
    """
    locations = _LocationCache(store)
    verifier = ChainVerifier(genesis, locations)
    blocks_ok = txs_ok = 0  # counted once a block and all of its index entries passed
    try:
        end = store.last_stored_height()
    except LedgerError as exc:
        return _failed(blocks_ok, txs_ok, None, str(exc))
    for height in range(1, end + 1):
        try:
            txs_ok += _verify_stored_block(store, verifier, locations, height)
        except LedgerError as exc:
            return _failed(blocks_ok, txs_ok, height, str(exc))
        blocks_ok += 1
        if progress is not None:
            progress(height, end)
    expected = (verifier.head.height, verifier.head.hash)
    try:
        pointer = store.head_pointer()
    except LedgerError as exc:
        return _failed(blocks_ok, txs_ok, end, str(exc))
    if pointer != expected:
        where = "is missing" if pointer is None else f"says {pointer[0]}, {pointer[1].hex()}"
        reason = f"the head pointer {where}, expected the last block {expected[0]}"
        return _failed(blocks_ok, txs_ok, end, reason)
    return VerifyReport(
        ok=True, blocks_checked=blocks_ok, txs_checked=txs_ok, first_bad_height=None, reason=_OK
    )


def _failed(blocks_ok: int, txs_ok: int, height: int | None, reason: str) -> VerifyReport:
    return VerifyReport(
        ok=False, blocks_checked=blocks_ok, txs_checked=txs_ok, first_bad_height=height,
        reason=reason,
    )  # fmt: skip


class _LocationCache:
    """The store's `tx_location`, remembering one block's answers so that the index check
    after `ChainVerifier.feed` does not read each tx's entry a second time."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._seen: dict[bytes, tuple[int, int] | None] = {}  # at most one block's txs

    def __call__(self, tx_id: bytes) -> tuple[int, int] | None:
        location = self._store.tx_location(tx_id)
        self._seen[tx_id] = location
        return location

    def pop(self, tx_id: bytes) -> tuple[int, int] | None:
        if tx_id in self._seen:
            return self._seen.pop(tx_id)
        return self._store.tx_location(tx_id)

    def clear(self) -> None:
        self._seen.clear()


def _verify_stored_block(
    store: BlockStore, verifier: ChainVerifier, locations: _LocationCache, height: int
) -> int:
    """Verify block `height` from its stored bytes, then every index entry written with it;
    return its number of txs."""
    block_bytes = store.raw_block(height)
    cert_bytes = store.raw_certificate(height)
    if block_bytes is None or cert_bytes is None:
        missing = "block" if block_bytes is None else "certificate"
        raise InvalidBlock(f"the {missing} of height {height} is missing")
    locations.clear()
    verified = verifier.feed(block_bytes, cert_bytes)
    block = verified.block
    if block.height != height:
        raise InvalidBlock(f"the block stored at height {height} says height {block.height}")
    if store.height_of(block.hash) != height:
        raise InvalidBlock(f"the block hash index does not point at height {height}")
    for index, t in enumerate(block.txs):
        # check_block accepted a missing entry as "not committed elsewhere": require it here.
        if locations.pop(t.tx_id) != (height, index):
            raise InvalidBlock(f"the tx index entry of tx {index} is missing or wrong")
        code = block.outcomes[index]
        if store.tx_outcome(t.tx_id) != code:
            raise InvalidBlock(f"the outcome index entry of tx {index} is missing or wrong")
        if store.record_entry(t.key, height, index) != (None if code else t.tx_id):
            raise InvalidBlock(f"the record index entry of tx {index} ({t.key}) is wrong")
        if store.indexed_tx(t.tx_id) != (height, index, t.raw):
            raise InvalidBlock(f"the tx bytes index entry of tx {index} is missing or wrong")
    if [a.to_list() for a in store.alerts_at(height)] != [a.to_list() for a in verified.alerts]:
        raise InvalidBlock(f"the risk alerts stored for height {height} are not the replay's")
    for node in verified.history_nodes:
        if store.history_node(node.level, node.index) != node.digest:
            raise InvalidBlock(f"history node ({node.level}, {node.index}) is missing or wrong")
    return len(block.txs)
