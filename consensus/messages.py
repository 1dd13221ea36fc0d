"""Consensus messages: their wire form, signatures, and the decoder's contract.

Wire form: `encode([kind, chain_id, sender, body, signature])` (docs/protocol.md). Signatures:
- Commit: COMMIT domain over `encode([chain_id, view, height, block_hash])`, exactly a commit
  certificate vote, so a quorum of Commits are the block's certificate;
- Checkpoint: CHECKPOINT domain over `encode([chain_id, height, block_hash])`, transferable;
- every other kind: PEER domain over `encode([kind, chain_id, sender, sha256(encode(body))])`.
`decode_message` returns a structurally valid message or raises `InvalidMessage`, never anything
else; signatures are checked by `verify_signature` against the genesis.
"""

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger import block as blocks
from ledger import crypto
from ledger import tx as txs
from ledger.encoding import decode, encode, expect_bytes, expect_int, expect_list, expect_str
from ledger.errors import InvalidBlock, InvalidEncoding, InvalidTransaction, LedgerError
from ledger.genesis import Genesis
from ledger.primitives import DIGEST_BYTES, ID_BYTES_MAX, SIGNATURE_BYTES, VALIDATORS_MAX

MESSAGE_BYTES_MAX: Final = 256 * 1024 * 1024  # any envelope (a TxBatch of TX_BATCH_MAX txs)
PREPARED_MAX: Final = 64  # prepared proofs in one ViewChange (the watermark window bounds it)
TX_BATCH_MAX: Final = 10_000
VIEW_MAX: Final = 2**63 - 1

# Upper bounds of canonical encodings, for the byte bounds of the view change (msgpack: an int
# takes at most 9 bytes, the header of an array, string or byte string at most 5).
_INT: Final = 9
_HEAD: Final = 5
_DIGEST: Final = 2 + DIGEST_BYTES
_SIGNATURE: Final = 2 + SIGNATURE_BYTES
_VOTE: Final = _HEAD + _INT + _SIGNATURE  # [sender, signature]
_ENVELOPE: Final = _HEAD + _INT + (_HEAD + ID_BYTES_MAX) + _INT + _SIGNATURE  # all but the body


def view_change_bytes_max(validators: int) -> int:
    """The largest ViewChange envelope the decoder takes among `validators`: a certificate and
    `PREPARED_MAX` prepared proofs (the widest window), each with a vote of every validator.
    It carries block hashes, never blocks, so the bound holds whatever the blocks weigh."""
    certificate = _HEAD + _INT + _DIGEST + _INT + _HEAD + validators * _VOTE
    proof = _HEAD + 2 * _INT + _DIGEST + _HEAD + validators * _VOTE
    body = _HEAD + 2 * _INT + _DIGEST + (_HEAD + certificate) + _HEAD + PREPARED_MAX * proof
    return _ENVELOPE + body


def new_view_bytes_max(validators: int) -> int:
    """The largest NewView envelope the decoder takes: a ViewChange of every validator."""
    nested = _HEAD + view_change_bytes_max(validators)
    return _ENVELOPE + _HEAD + _INT + _HEAD + validators * nested


NEW_VIEW_BYTES_MAX: Final = new_view_bytes_max(VALIDATORS_MAX)  # for the largest genesis
BLOCK_REQUEST_BYTES_MAX: Final = _ENVELOPE + 2 * _HEAD + PREPARED_MAX * _DIGEST


# sha256 of the canonical body bytes, kept by `decode_message` from the bytes it decoded (the
# PEER-domain signature covers it): never an init field, so a message built or `replace`d from
# fields computes it from its fields.
def _body_digest_field() -> Any:
    return dataclasses.field(default=None, init=False, repr=False, compare=False)


_SIGNATURE_SUFFIX_BYTES: Final = 2 + SIGNATURE_BYTES  # bin8 header and the signature


class Reason(enum.StrEnum):
    """Why a peer message was dropped: stable codes, used as metric labels as they are."""

    MALFORMED = "malformed"  # not the canonical encoding of a message
    WRONG_CHAIN = "wrong_chain"
    SENDER = "sender"  # from ourselves, or from no validator
    BAD_SIGNATURE = "bad_signature"
    NOT_PRIMARY = "not_primary"  # a pre-prepare or new-view not from its view's primary
    BLOCK_MISMATCH = "block_mismatch"  # a pre-prepare whose block names another view or height
    STAMP = "stamp"  # a block stamped outside the bounds of the replica's clock and its parent
    INVALID_BLOCK = "invalid_block"  # a proposed block that does not extend its parent validly
    CHECKPOINT_HEIGHT = "checkpoint_height"
    VIEW_CHANGE = "view_change"  # a view change whose head or prepared proofs do not hold
    PREPARED_PROOF = "prepared_proof"
    NEW_VIEW = "new_view"  # a new-view without a valid quorum of view changes for its view
    NOT_FOR_REPLICA = "not_for_replica"  # tx batches go through the shell's admission
    TOO_LARGE = "too_large"  # longer than the byte bound of its kind


class InvalidMessage(LedgerError):
    """A consensus message from outside that must be dropped (and counted): `reason` is a
    stable code for counting, `detail` prose for a log line (never parsed)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class Kind(enum.IntEnum):
    PRE_PREPARE = 1
    PREPARE = 2
    COMMIT = 3
    CHECKPOINT = 4
    VIEW_CHANGE = 5
    NEW_VIEW = 6
    STATUS = 7
    TX_BATCH = 8
    BLOCK_REQUEST = 9
    BLOCK_REPLY = 10


@dataclass(frozen=True)
class PrePrepare:
    view: int
    height: int
    block: blocks.Block
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.PRE_PREPARE


@dataclass(frozen=True)
class Prepare:
    view: int
    height: int
    block_hash: bytes
    sender: int
    signature: bytes = b""
    kind: ClassVar[Kind] = Kind.PREPARE


@dataclass(frozen=True)
class Commit:
    view: int
    height: int
    block_hash: bytes
    sender: int
    signature: bytes = b""
    kind: ClassVar[Kind] = Kind.COMMIT


@dataclass(frozen=True)
class Checkpoint:
    height: int
    block_hash: bytes
    sender: int
    signature: bytes = b""
    kind: ClassVar[Kind] = Kind.CHECKPOINT


@dataclass(frozen=True)
class PreparedProof:
    """A block prepared in `view` at `height`: a quorum of (sender, Prepare signature) for its
    hash. The block itself travels apart (PrePrepare, BlockReply)."""

    view: int
    height: int
    block_hash: bytes
    prepares: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class ViewChange:
    """A replica's request to move to `new_view`, with its committed head and prepared blocks."""

    new_view: int
    committed_height: int
    committed_hash: bytes
    certificate: blocks.Certificate | None  # None only at height 0 (the genesis)
    prepared: tuple[PreparedProof, ...]
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.VIEW_CHANGE


@dataclass(frozen=True)
class NewView:
    view: int
    view_changes: tuple[ViewChange, ...]
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.NEW_VIEW


@dataclass(frozen=True)
class Status:
    """Periodic gossip: lets a lagging or restarted replica learn the view and the height."""

    view: int
    committed_height: int
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.STATUS


@dataclass(frozen=True)
class TxBatch:
    """Client transactions relayed to the other replicas (each is client-signed)."""

    txs: tuple[txs.Transaction, ...]
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.TX_BATCH


@dataclass(frozen=True)
class BlockRequest:
    """Asks a peer for blocks by hash: those a NewView re-proposes that the sender lacks."""

    hashes: tuple[bytes, ...]
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.BLOCK_REQUEST


@dataclass(frozen=True)
class BlockReply:
    """One block asked for by a BlockRequest; the asker trusts it only by the hash it wanted."""

    block: blocks.Block
    sender: int
    signature: bytes = b""
    _body_digest: bytes | None = _body_digest_field()
    kind: ClassVar[Kind] = Kind.BLOCK_REPLY


Message = (
    PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | Status | TxBatch
    | BlockRequest | BlockReply
)  # fmt: skip


def _prepared_body(p: PreparedProof) -> list[Any]:
    return [p.view, p.height, p.block_hash, [list(s) for s in p.prepares]]


def body(msg: Message, chain_id: str) -> list[Any]:
    """The kind-specific part of the wire array (a NewView nests whole ViewChange envelopes)."""
    match msg:
        case PrePrepare():
            return [msg.view, msg.height, msg.block.encode()]
        case Prepare() | Commit():
            return [msg.view, msg.height, msg.block_hash]
        case Checkpoint():
            return [msg.height, msg.block_hash]
        case ViewChange():
            cert = msg.certificate.encode() if msg.certificate is not None else None
            prepared = [_prepared_body(p) for p in msg.prepared]
            return [msg.new_view, msg.committed_height, msg.committed_hash, cert, prepared]
        case NewView():
            return [msg.view, [encode_message(vc, chain_id) for vc in msg.view_changes]]
        case Status():
            return [msg.view, msg.committed_height]
        case TxBatch():
            return [[t.raw for t in msg.txs]]
        case BlockRequest():
            return [list(msg.hashes)]
        case BlockReply():
            return [msg.block.encode()]


def encode_message(msg: Message, chain_id: str) -> bytes:
    return encode([int(msg.kind), chain_id, msg.sender, body(msg, chain_id), msg.signature])


def prepare_payload(chain_id: str, sender: int, view: int, height: int, block_hash: bytes) -> bytes:
    inner = crypto.sha256(encode([view, height, block_hash]))
    return encode([int(Kind.PREPARE), chain_id, sender, inner])


def signed_payload(msg: Message, chain_id: str) -> tuple[crypto.Domain, bytes]:
    """The domain and bytes that `msg`'s signature covers."""
    match msg:
        case Commit():
            payload = blocks.commit_payload(chain_id, msg.view, msg.height, msg.block_hash)
            return crypto.Domain.COMMIT, payload
        case Checkpoint():
            return crypto.Domain.CHECKPOINT, encode([chain_id, msg.height, msg.block_hash])
        case Prepare():
            payload = prepare_payload(chain_id, msg.sender, msg.view, msg.height, msg.block_hash)
            return crypto.Domain.PEER, payload
        case _:
            inner = msg._body_digest or crypto.sha256(encode(body(msg, chain_id)))
            return crypto.Domain.PEER, encode([int(msg.kind), chain_id, msg.sender, inner])


M = TypeVar(
    "M", PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, Status, TxBatch,
    BlockRequest, BlockReply,
)  # fmt: skip


def sign(msg: M, key: Ed25519PrivateKey, chain_id: str) -> M:
    """`msg` with its signature (the sender field must already name the signer)."""
    domain, payload = signed_payload(msg, chain_id)
    return dataclasses.replace(msg, signature=crypto.sign(key, domain, payload))


def verify_signature(msg: Message, genesis: Genesis) -> bool:
    if not 0 <= msg.sender < len(genesis.validators):
        return False
    domain, payload = signed_payload(msg, genesis.chain_id)
    return crypto.verify(genesis.validators[msg.sender].key, domain, payload, msg.signature)


def bytes_max(raw: bytes, validators: int) -> int:
    """The byte bound of the envelope `raw` by the kind its head names (checked before it is
    decoded): a ViewChange and a NewView by the number of validators, a BlockRequest by the
    most hashes it may name, any other kind by `MESSAGE_BYTES_MAX`."""
    kind = raw[1] if len(raw) > 1 and raw[0] == 0x95 else None  # a 5-item array, then the kind
    match kind:
        case Kind.VIEW_CHANGE:
            return view_change_bytes_max(validators)
        case Kind.NEW_VIEW:
            return new_view_bytes_max(validators)
        case Kind.BLOCK_REQUEST:
            return BLOCK_REQUEST_BYTES_MAX
        case _:
            return MESSAGE_BYTES_MAX


def _check_length(raw: bytes, validators: int) -> None:
    limit = bytes_max(raw, validators)
    if len(raw) > limit:
        raise InvalidMessage(Reason.TOO_LARGE, f"{len(raw)} bytes, at most {limit} for its kind")


def decode_message(
    raw: bytes, chain_id: str, known: txs.KnownTx | None = None,
    validators: int = VALIDATORS_MAX,
) -> Message:  # fmt: skip
    """Parse one envelope for `chain_id` among `validators`; raise `InvalidMessage` for anything
    else (`too_large` past the byte bound of its kind).

    `known(tx_id)` may offer txs already decoded (the pool's): see `ledger.tx.decode_known`."""
    assert 1 <= validators <= VALIDATORS_MAX
    _check_length(raw, validators)
    try:
        items = expect_list(decode(raw, MESSAGE_BYTES_MAX), 5, "message")
        msg = _parse(items, chain_id, validators, known)
    except (InvalidEncoding, InvalidBlock, InvalidTransaction) as exc:
        raise InvalidMessage(Reason.MALFORMED, str(exc)) from None
    _keep_body_digest(msg, raw, chain_id)
    return msg


def _keep_body_digest(msg: Message, raw: bytes, chain_id: str) -> None:
    """Remember the digest of the body bytes inside the canonical `raw`: they are exactly
    `encode(body(msg))`, between the envelope's first three items and its signature."""
    if isinstance(msg, Prepare | Commit | Checkpoint):
        return
    start = len(encode([int(msg.kind), chain_id, msg.sender]))  # same header size as 5 items
    assert raw[-_SIGNATURE_SUFFIX_BYTES:][:2] == b"\xc4\x40"
    digest = crypto.sha256(raw[start : len(raw) - _SIGNATURE_SUFFIX_BYTES])
    object.__setattr__(msg, "_body_digest", digest)


def _parse(
    items: list[Any], chain_id: str, validators: int, known: txs.KnownTx | None = None
) -> Message:
    kind = expect_int(items[0], 1, len(Kind), "kind")
    if expect_str(items[1], ID_BYTES_MAX, "chain_id") != chain_id:
        raise InvalidMessage(Reason.WRONG_CHAIN, f"chain {items[1]!r}, this is {chain_id!r}")
    sender = expect_int(items[2], 0, VALIDATORS_MAX - 1, "sender")
    sig = expect_bytes(items[4], SIGNATURE_BYTES, "signature")
    b = items[3]
    if not isinstance(b, list):
        raise InvalidEncoding("body: expected an array")
    match Kind(kind):
        case Kind.PRE_PREPARE:
            view, height, raw_block = expect_list(b, 3, "pre-prepare")
            block = blocks.decode_block(_bytes(raw_block, "block"), known)
            return PrePrepare(_view(view), _height(height), block, sender, sig)
        case Kind.PREPARE | Kind.COMMIT:
            view, height, digest = expect_list(b, 3, "vote")
            cls = Prepare if kind == Kind.PREPARE else Commit
            return cls(_view(view), _height(height), _digest(digest), sender, sig)
        case Kind.CHECKPOINT:
            height, digest = expect_list(b, 2, "checkpoint")
            return Checkpoint(_height(height), _digest(digest), sender, sig)
        case Kind.VIEW_CHANGE:
            return _parse_view_change(b, sender, sig, validators)
        case Kind.NEW_VIEW:
            view, raw_vcs = expect_list(b, 2, "new-view")
            if not isinstance(raw_vcs, list) or len(raw_vcs) > validators:
                raise InvalidEncoding("new-view: at most a view change per validator")
            vcs = tuple(
                _nested_view_change(_bytes(r, "view change"), chain_id, validators) for r in raw_vcs
            )
            return NewView(_view(view), vcs, sender, sig)
        case Kind.STATUS:
            view, height = expect_list(b, 2, "status")
            return Status(_view(view), expect_int(height, 0, VIEW_MAX, "height"), sender, sig)
        case Kind.TX_BATCH:
            (raw_txs,) = expect_list(b, 1, "tx batch")
            if not isinstance(raw_txs, list) or len(raw_txs) > TX_BATCH_MAX:
                raise InvalidEncoding(f"tx batch: at most {TX_BATCH_MAX} transactions")
            if known is None:
                batch = tuple(txs.decode_tx(_bytes(t, "tx")) for t in raw_txs)
            else:
                batch = tuple(txs.decode_known(_bytes(t, "tx"), known) for t in raw_txs)
            return TxBatch(batch, sender, sig)
        case Kind.BLOCK_REQUEST:
            (raw_hashes,) = expect_list(b, 1, "block request")
            if not isinstance(raw_hashes, list) or not 1 <= len(raw_hashes) <= PREPARED_MAX:
                raise InvalidEncoding(f"block request: 1 to {PREPARED_MAX} hashes")
            return BlockRequest(tuple(_digest(h) for h in raw_hashes), sender, sig)
        case Kind.BLOCK_REPLY:
            (raw_block,) = expect_list(b, 1, "block reply")
            return BlockReply(blocks.decode_block(_bytes(raw_block, "block"), known), sender, sig)


def _nested_view_change(raw: bytes, chain_id: str, validators: int) -> ViewChange:
    if raw[1:2] != bytes([Kind.VIEW_CHANGE]):
        raise InvalidMessage(Reason.MALFORMED, "a new-view may only carry view changes")
    items = expect_list(decode(raw, view_change_bytes_max(validators)), 5, "view change")
    msg = _parse(items, chain_id, validators)
    if not isinstance(msg, ViewChange):
        raise InvalidMessage(Reason.MALFORMED, "a new-view may only carry view changes")
    _keep_body_digest(msg, raw, chain_id)
    return msg


def _parse_view_change(b: list[Any], sender: int, sig: bytes, validators: int) -> ViewChange:
    new_view, height, head_hash, raw_cert, raw_prepared = expect_list(b, 5, "view-change")
    cert = None if raw_cert is None else blocks.decode_certificate(_bytes(raw_cert, "cert"))
    if cert is not None and len(cert.votes) > validators:
        raise InvalidEncoding("view-change: at most a certificate vote per validator")
    if not isinstance(raw_prepared, list) or len(raw_prepared) > PREPARED_MAX:
        raise InvalidEncoding(f"view-change: at most {PREPARED_MAX} prepared proofs")
    prepared = []
    for item in raw_prepared:
        view, p_height, digest, raw_sigs = expect_list(item, 4, "prepared proof")
        if not isinstance(raw_sigs, list) or len(raw_sigs) > validators:
            raise InvalidEncoding("prepared proof: at most a signature per validator")
        sigs = tuple(
            (
                expect_int(expect_list(s, 2, "prepare")[0], 0, VALIDATORS_MAX - 1, "sender"),
                expect_bytes(s[1], SIGNATURE_BYTES, "signature"),
            )
            for s in raw_sigs
        )
        prepared.append(PreparedProof(_view(view), _height(p_height), _digest(digest), sigs))
    committed = expect_int(height, 0, VIEW_MAX, "committed height")
    if (cert is None) != (committed == 0):
        raise InvalidEncoding("view-change: a certificate is required above height 0")
    return ViewChange(
        _view(new_view), committed, _digest(head_hash), cert, tuple(prepared), sender, sig
    )


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidEncoding(f"{what}: expected bytes")
    return value


def _view(value: Any) -> int:
    return expect_int(value, 0, VIEW_MAX, "view")


def _height(value: Any) -> int:
    return expect_int(value, 1, VIEW_MAX, "height")


def _digest(value: Any) -> bytes:
    return expect_bytes(value, DIGEST_BYTES, "digest")
