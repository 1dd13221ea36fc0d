"""Blocks, chain heads and commit certificates, and the pure rule for extending a chain.

Height 0 is the genesis: its "hash" is the genesis hash, the `prev_hash` of block 1. The history
accumulator is an RFC 9162 tree whose leaf i is the hash of block i (leaf 0: the genesis hash);
block h commits to the root over leaves 0..h-1, so any earlier block can be proven against a
later one in O(log n). A certificate is a quorum (2f+1 at n = 3f+1) of distinct validators'
Commit signatures over
`encode([chain_id, view, height, block_hash])` in the COMMIT domain.

A block carries the outcome of each of its txs (accepted, or refused with a rule's reason
code: ledger/kinds/) and its header commits to them through `outcome_root`, an RFC 9162 tree
over `encode([tx_id, code])` in block order, so one tx's outcome is provable like its
inclusion. `check_block` recomputes the outcomes from the rule state before the block.
"""

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Final

from ledger import crypto, merkle
from ledger import tx as txs
from ledger.encoding import decode, encode, expect_bytes, expect_int, expect_list
from ledger.errors import InvalidBlock, InvalidEncoding, InvalidTransaction
from ledger.genesis import Genesis
from ledger.gov.config import Config
from ledger.gov.history import config_of
from ledger.gov.signers import block_signer, check_block_signature
from ledger.kinds.base import ACCEPTED, REASONS
from ledger.kinds.execute import Executed, Getter, check_outcomes, execute, outcome_root
from ledger.primitives import (
    BLOCK_BYTES_MAX,
    BLOCK_TXS_MAX,
    DIGEST_BYTES,
    SIGNATURE_BYTES,
    VALIDATORS_MAX,
)

HEADER_VERSION: Final = 2  # 2: the outcome root
HEIGHT_MAX: Final = 2**63 - 1
CERTIFICATE_BYTES_MAX: Final = 128 + VALIDATORS_MAX * (SIGNATURE_BYTES + 8)
HEADER_BYTES_MAX: Final = 256  # 10 fields: 4 digests and 6 integers
_OUTCOME_CODES: Final = frozenset((ACCEPTED, *REASONS))  # "" is accepted
_BYTES_ONLY: Final = frozenset({bytes})


@dataclass(frozen=True)
class BlockHeader:
    height: int
    prev_hash: bytes
    tx_root: bytes
    tx_count: int  # binds the size of the tx tree, so an inclusion proof pins a tx's position
    history_root: bytes
    timestamp_ms: int
    view: int
    proposer: int
    outcome_root: bytes  # the tree over encode([tx_id, outcome code]) in block order

    def to_list(self) -> list[Any]:
        return [
            HEADER_VERSION, self.height, self.prev_hash, self.tx_root, self.tx_count,
            self.history_root, self.timestamp_ms, self.view, self.proposer, self.outcome_root,
        ]  # fmt: skip

    def hash(self) -> bytes:
        return crypto.sha256(encode(self.to_list()))


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[txs.Transaction, ...]
    hash: bytes = field(compare=False)
    # One code per tx ("" accepted); the header's outcome root commits to them. Left out,
    # every tx is accepted (untyped records: what every block held before kinds).
    outcomes: tuple[str, ...] = field(default=(), compare=False)
    # Memos of pure functions of this immutable block (never init fields: a block built or
    # `replace`d from fields starts without them). `_raw`: its canonical bytes, kept by
    # `decode_block` or made once by `encode`; a block travels and is stored several times.
    # `_body_ok`: `check_body` passed (or `make_block` computed the root from these txs).
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _body_ok: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.outcomes and self.txs:
            object.__setattr__(self, "outcomes", ("",) * len(self.txs))

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        if self._raw is None:
            raw = encode([self.header.to_list(), [t.raw for t in self.txs], list(self.outcomes)])
            object.__setattr__(self, "_raw", raw)
            return raw
        return self._raw


@dataclass(frozen=True)
class Certificate:
    height: int
    block_hash: bytes
    view: int
    votes: tuple[tuple[int, bytes], ...]  # (validator index, signature), sorted by index

    def encode(self) -> bytes:
        return encode([self.height, self.block_hash, self.view, [list(v) for v in self.votes]])


@dataclass(frozen=True)
class ChainHead:
    """What extending the chain needs to know of its last block."""

    height: int
    hash: bytes
    timestamp_ms: int
    history: merkle.Frontier  # over block hashes 0..height (leaf 0 is the genesis hash)

    @staticmethod
    def genesis(genesis: Genesis) -> "ChainHead":
        return ChainHead(0, genesis.hash, 0, merkle.Frontier.empty().append(genesis.hash))

    def advance(self, block: Block) -> "ChainHead":
        return ChainHead(
            block.height, block.hash, block.header.timestamp_ms, self.history.append(block.hash)
        )


def commit_payload(chain_id: str, view: int, height: int, block_hash: bytes) -> bytes:
    return encode([chain_id, view, height, block_hash])


def make_block(
    head: ChainHead, transactions: tuple[txs.Transaction, ...], timestamp_ms: int, view: int,
    proposer: int, outcomes: tuple[str, ...] | None = None,
) -> Block:  # fmt: skip
    """The block of `transactions` on `head`; `outcomes` None: every tx accepted."""
    ids = [t.tx_id for t in transactions]
    codes = ("",) * len(ids) if outcomes is None else outcomes
    header = BlockHeader(
        head.height + 1, head.hash, merkle.root(ids), len(transactions), head.history.root(),
        timestamp_ms, view, proposer, outcome_root(ids, codes),
    )  # fmt: skip
    block = Block(header, transactions, header.hash(), codes)
    object.__setattr__(block, "_body_ok", True)  # the root was just computed from these txs
    return block


def decode_block(raw: bytes, known: txs.KnownTx | None = None) -> Block:
    """Parse block bytes; raise `InvalidBlock` for anything but a well-formed block.

    `known(tx_id)` may offer a tx already decoded (e.g. from the pool): it is used only if it
    was decoded from exactly the same bytes (`ledger.tx.decode_known`)."""
    try:
        items = expect_list(decode(raw, BLOCK_BYTES_MAX), 3, "block")
        header = _parse_header(items[0])
        if not isinstance(items[1], list) or len(items[1]) > BLOCK_TXS_MAX:
            raise InvalidEncoding(f"txs: expected an array of at most {BLOCK_TXS_MAX}")
        if not _BYTES_ONLY.issuperset(map(type, items[1])):  # one C-level pass
            raise InvalidEncoding("txs: expected byte strings")
        if known is None:
            body = tuple(txs.decode_tx(t) for t in items[1])
        else:
            body = tuple(txs.decode_known(t, known) for t in items[1])
        outcomes = _parse_outcomes(items[2], len(body))
    except (InvalidEncoding, InvalidTransaction) as exc:
        raise InvalidBlock(f"malformed block: {exc}") from None
    block = Block(header, body, header.hash(), outcomes)
    object.__setattr__(block, "_raw", bytes(raw))  # canonical: `decode` checked it
    return block


def _parse_outcomes(value: Any, count: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise InvalidEncoding("outcomes: expected an array of one code per tx")
    if not all(type(v) is str and v in _OUTCOME_CODES for v in value):
        raise InvalidEncoding('outcomes: expected "" (accepted) or a reason code each')
    return tuple(value)


def _parse_header(value: Any) -> BlockHeader:
    h = expect_list(value, 10, "header")
    expect_int(h[0], HEADER_VERSION, HEADER_VERSION, "header version")
    return BlockHeader(
        expect_int(h[1], 1, HEIGHT_MAX, "height"),
        expect_bytes(h[2], DIGEST_BYTES, "prev_hash"),
        expect_bytes(h[3], DIGEST_BYTES, "tx_root"),
        expect_int(h[4], 0, BLOCK_TXS_MAX, "tx_count"),
        expect_bytes(h[5], DIGEST_BYTES, "history_root"),
        expect_int(h[6], 0, txs.TIMESTAMP_MS_MAX, "timestamp_ms"),
        expect_int(h[7], 0, HEIGHT_MAX, "view"),
        expect_int(h[8], 0, VALIDATORS_MAX - 1, "proposer"),
        expect_bytes(h[9], DIGEST_BYTES, "outcome_root"),
    )


def decode_header(raw: bytes) -> BlockHeader:
    """Parse the canonical bytes of a header alone (as proof bundles carry it)."""
    try:
        return _parse_header(decode(raw, HEADER_BYTES_MAX))
    except InvalidEncoding as exc:
        raise InvalidBlock(f"malformed header: {exc}") from None


def check_body(block: Block) -> None:
    """The txs and outcomes are the ones the header commits to: count and Merkle roots."""
    if block._body_ok:  # a pure function of the immutable block, already computed
        return
    if block.header.tx_count != len(block.txs):
        raise InvalidBlock(f"block {block.height} holds another number of txs than its header")
    if block.header.tx_root != merkle.root([t.tx_id for t in block.txs]):
        raise InvalidBlock(f"block {block.height} has a wrong tx root")
    if len(block.outcomes) != len(block.txs) or block.header.outcome_root != outcome_root(
        [t.tx_id for t in block.txs], block.outcomes
    ):
        raise InvalidBlock(f"block {block.height} has a wrong outcome root")
    object.__setattr__(block, "_body_ok", True)


def decode_certificate(raw: bytes) -> Certificate:
    try:
        items = expect_list(decode(raw, CERTIFICATE_BYTES_MAX), 4, "certificate")
        votes_raw = items[3]
        if not isinstance(votes_raw, list) or len(votes_raw) > VALIDATORS_MAX:
            raise InvalidEncoding("votes: expected an array")
        votes = tuple(
            (
                expect_int(expect_list(v, 2, "vote")[0], 0, VALIDATORS_MAX - 1, "vote index"),
                expect_bytes(v[1], SIGNATURE_BYTES, "vote signature"),
            )
            for v in votes_raw
        )
        return Certificate(
            expect_int(items[0], 1, HEIGHT_MAX, "height"),
            expect_bytes(items[1], DIGEST_BYTES, "block_hash"),
            expect_int(items[2], 0, HEIGHT_MAX, "view"),
            votes,
        )
    except InvalidEncoding as exc:
        raise InvalidBlock(f"malformed certificate: {exc}") from None


def verify_certificate_votes(cert: Certificate, genesis: Genesis) -> None:
    """Raise `InvalidBlock` unless `cert` holds a quorum of valid Commit votes for its hash."""
    indices = [i for i, _ in cert.votes]
    if indices != sorted(set(indices)):
        raise InvalidBlock("certificate votes are not sorted by distinct validator index")
    if len(indices) < genesis.quorums.commit:
        raise InvalidBlock(f"certificate has {len(indices)} votes, {genesis.quorums.commit} needed")
    payload = commit_payload(genesis.chain_id, cert.view, cert.height, cert.block_hash)
    for index, signature in cert.votes:
        if index >= len(genesis.validators):
            raise InvalidBlock(f"certificate vote from unknown validator index {index}")
        key = genesis.validators[index].key
        if not crypto.verify(key, crypto.Domain.COMMIT, payload, signature):
            raise InvalidBlock(f"certificate signature of validator {index} is invalid")


def verify_certificate(cert: Certificate, block: Block, genesis: Genesis) -> None:
    """Raise `InvalidBlock` unless `cert` holds a quorum of valid Commit votes for `block`."""
    if cert.height != block.height or cert.block_hash != block.hash:
        raise InvalidBlock(f"certificate is for another block than height {block.height}")
    if cert.view < block.header.view:
        # A block is prepared only in its own view or a later one (after a view change).
        raise InvalidBlock(f"certificate of block {block.height} predates the block's view")
    verify_certificate_votes(cert, genesis)


def check_block(
    block: Block,
    head: ChainHead,
    genesis: Genesis,
    *,
    is_committed: Callable[[bytes], bool],
    signatures_checked: Container[bytes] = frozenset(),
    state: Getter = lambda _key: None,
    config: Config | None = None,
    executed: Executed | None = None,
) -> Executed:
    """Raise `InvalidBlock` unless `block` validly extends `head`; return its execution.

    Every tx must be valid at the block's timestamp and new to the chain; `signatures_checked`
    names tx ids whose signatures the caller has already verified (e.g. at admission). Its
    outcomes must be the ones its txs get, in order, against `state`: the rule state at
    `head` (the default, an empty state, is the state before any typed record); `config` the
    configuration in force at `head` (None: derived from `state`); `executed` the execution of
    its txs against `state` if the caller made it already (the primary, to propose them).
    """
    if config is None:
        config = config_of(state, genesis)  # in force before the block (ledger/gov)
    check_links(block, head, config.members)  # the proposer and limits of the block's epoch
    header = block.header
    ids = [t.tx_id for t in block.txs]
    if len(set(ids)) != len(ids):
        raise InvalidBlock(f"block {header.height} holds a tx twice")
    for index, t in enumerate(block.txs):
        try:
            if is_committed(t.tx_id):
                raise InvalidTransaction(txs.DUPLICATE, "already committed")
            signer = block_signer(t, config)
            txs.check_time(t, config.members, header.timestamp_ms)
            if t.tx_id not in signatures_checked:
                check_block_signature(t, signer, config)
        except InvalidTransaction as exc:
            raise InvalidBlock(f"block {header.height} tx {index}: {exc}") from None
    if executed is None:
        executed = execute(
            state, block.txs, genesis, header.timestamp_ms, header.height, config=config
        )
    check_outcomes(block.outcomes, executed, header.height)
    return executed


def check_links(block: Block, head: ChainHead, genesis: Genesis) -> None:
    """The rules of `check_block` on the block as a whole: it extends `head` (height, parent,
    history root, time), its proposer, size and body; none about its txs one by one."""
    header, params = block.header, genesis.params
    if header.height != head.height + 1 or header.prev_hash != head.hash:
        raise InvalidBlock(f"block {header.height} does not extend the head at {head.height}")
    if header.history_root != head.history.root():
        raise InvalidBlock(f"block {header.height} has a wrong history root")
    if header.timestamp_ms < head.timestamp_ms:
        raise InvalidBlock(f"block {header.height} is stamped before its parent")
    if header.proposer != header.view % len(genesis.validators):
        raise InvalidBlock(f"block {header.height}: proposer is not the primary of its view")
    if len(block.txs) > params.block_txs_max:
        raise InvalidBlock(f"block {header.height} has more than {params.block_txs_max} txs")
    if sum(len(t.raw) for t in block.txs) > params.block_bytes_max:
        raise InvalidBlock(f"block {header.height} is larger than {params.block_bytes_max} bytes")
    check_body(block)
