"""The first look at a peer message: its envelope's head, sender and signature, before its body.

A consensus envelope is `encode([kind, chain_id, sender, body, signature])`
(docs/protocol.md, section 13). Decoding a body costs far more than hashing it (a 64 MiB
PrePrepare took seconds to decode), so `check` reads only the head (kind, chain id, sender) and
the signature at the end, and for every kind whose signature covers SHA-256 of the body bytes
verifies it over exactly those bytes: a message that is not from a validator of this chain,
or not signed by it, is dropped after one hash and one signature check, never decoded. Votes
(Prepare, Commit, Checkpoint) are signed over their decoded fields and are small: their
envelopes are bounded by `VOTE_ENVELOPE_BYTES_MAX` instead, and the replica checks them.

`check` returns None for an envelope that may now be decoded in full, else the reason to drop
it. It never raises for anything a peer sends; it reads no state but the genesis.
"""

import hashlib
from typing import Final

import msgpack

from consensus.messages import Kind
from ledger import crypto
from ledger.encoding import encode
from ledger.genesis import Genesis
from ledger.primitives import SIGNATURE_BYTES

HEAD_BYTES_MAX: Final = 96  # array header, kind, chain id (at most 64 bytes), sender
VOTE_ENVELOPE_BYTES_MAX: Final = 512  # ints, a 32-byte hash, a signature and the head
# Envelopes larger than this are checked off the event loop (the hash of a large body takes
# milliseconds; hashlib lets go of the GIL while it hashes).
OFF_LOOP_BYTES_MIN: Final = 1024 * 1024
_ARRAY_OF_5: Final = 0x95
_SIGNATURE_HEADER: Final = b"\xc4\x40"  # bin8 of 64 bytes
_SUFFIX_BYTES: Final = len(_SIGNATURE_HEADER) + SIGNATURE_BYTES
_VOTES: Final = frozenset({Kind.PREPARE, Kind.COMMIT, Kind.CHECKPOINT})
_KINDS: Final = frozenset(int(k) for k in Kind)

MALFORMED: Final = "malformed"
WRONG_CHAIN: Final = "wrong_chain"
UNKNOWN_SENDER: Final = "unknown_sender"
TOO_LARGE: Final = "too_large"
BAD_SIGNATURE: Final = "bad_signature"


def head(raw: bytes) -> tuple[int, object, object, int] | None:
    """(kind, chain id, sender, offset of the body) from the first bytes of `raw`, or None."""
    if len(raw) < 1 + _SUFFIX_BYTES or raw[0] != _ARRAY_OF_5:
        return None
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=HEAD_BYTES_MAX)
    unpacker.feed(raw[1 : 1 + HEAD_BYTES_MAX])
    try:
        kind, chain_id, sender = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    except (ValueError, TypeError, msgpack.UnpackException, OverflowError):
        return None
    if type(kind) is not int:
        return None
    return kind, chain_id, sender, 1 + unpacker.tell()


def check(raw: bytes, genesis: Genesis, me: int) -> str | None:
    """None if envelope `raw` is from another validator of `genesis` and signed by it (or is a
    vote small enough to decode); else why it is dropped."""
    found = head(raw)
    if found is None or found[0] not in _KINDS:
        return MALFORMED
    kind, chain_id, sender, body_at = found
    if chain_id != genesis.chain_id:
        return WRONG_CHAIN
    if type(sender) is not int or not 0 <= sender < len(genesis.validators) or sender == me:
        return UNKNOWN_SENDER
    if raw[-_SUFFIX_BYTES:][: len(_SIGNATURE_HEADER)] != _SIGNATURE_HEADER:
        return MALFORMED
    if kind in _VOTES:
        return TOO_LARGE if len(raw) > VOTE_ENVELOPE_BYTES_MAX else None
    body = memoryview(raw)[body_at : len(raw) - _SUFFIX_BYTES]
    payload = encode([kind, chain_id, sender, hashlib.sha256(body).digest()])
    key = genesis.validators[sender].key
    if not crypto.verify(key, crypto.Domain.PEER, payload, raw[-SIGNATURE_BYTES:]):
        return BAD_SIGNATURE
    return None
