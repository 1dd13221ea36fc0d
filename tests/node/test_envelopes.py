"""The first look at a peer message: sender and signature are checked before the body is read."""

import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import messages as m
from node import envelopes
from tests import factory

NET = factory.network(4)
G = NET.genesis
BLOCK, CERT = next(factory.chain(NET, 1, 2))
ME = 3
FORGED_BODY_BYTES = 64 * 1024 * 1024


def signed(msg: m.M, sender: int) -> bytes:
    return m.encode_message(m.sign(msg, NET.validator_keys[sender], G.chain_id), G.chain_id)


def test_signed_messages_of_every_kind_pass() -> None:
    for raw in (
        signed(m.PrePrepare(0, 1, BLOCK, 0), 0),
        signed(m.Prepare(0, 1, BLOCK.hash, 1), 1),
        signed(m.Commit(0, 1, BLOCK.hash, 2), 2),
        signed(m.Checkpoint(1, BLOCK.hash, 1), 1),
        signed(m.Status(0, 1, 2), 2),
        signed(m.TxBatch(BLOCK.txs, 1), 1),
        signed(m.ViewChange(1, 1, BLOCK.hash, CERT, (), 2), 2),
    ):
        assert envelopes.check(raw, G, ME) is None


def _envelope(kind: int, body: bytes, sender: int = 0, chain_id: str = G.chain_id) -> bytes:
    """An envelope whose body bytes are `body` as given (not necessarily msgpack)."""
    head = msgpack.packb([kind, chain_id, sender], use_bin_type=True)[1:]
    return b"\x95" + head + body + b"\xc4\x40" + bytes(64)


def test_a_forged_64_mib_body_is_refused_by_its_signature_never_decoded() -> None:
    # Not msgpack at all: were it decoded, the reason would be `malformed`.
    raw = _envelope(int(m.Kind.PRE_PREPARE), b"\xc1" * FORGED_BODY_BYTES, sender=1)
    started = time.process_time()
    assert envelopes.check(raw, G, ME) == envelopes.BAD_SIGNATURE
    # One SHA-256 of the body and one signature check (decoding took seconds).
    assert time.process_time() - started < 2.0


def test_a_valid_signature_by_another_validator_is_refused() -> None:
    good = signed(m.Status(0, 1, 2), 2)
    head = msgpack.packb([int(m.Kind.STATUS), G.chain_id, 1], use_bin_type=True)[1:]
    as_one = b"\x95" + head + good[len(head) + 1 :]  # validator 2's signature, sender 1
    assert envelopes.check(as_one, G, ME) == envelopes.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", envelopes.MALFORMED),
        (b"\x94" + bytes(80), envelopes.MALFORMED),
        (_envelope(99, b"\x90"), envelopes.MALFORMED),
        (_envelope(7, b"\x92\x00\x01", chain_id="elsewhere"), envelopes.WRONG_CHAIN),
        (_envelope(7, b"\x92\x00\x01", sender=4), envelopes.UNKNOWN_SENDER),
        (_envelope(7, b"\x92\x00\x01", sender=ME), envelopes.UNKNOWN_SENDER),
        (_envelope(7, b"\x92\x00\x01", sender=-1), envelopes.UNKNOWN_SENDER),
        (_envelope(2, b"\x93\x00\x01\xc5" + bytes(1000)), envelopes.TOO_LARGE),
        (_envelope(7, b"\x92\x00\x01")[:-1], envelopes.MALFORMED),
        (b"\x95\xa1" + bytes(200), envelopes.MALFORMED),
    ],
)
def test_refusals_name_their_reason(raw: bytes, reason: str) -> None:
    assert envelopes.check(raw, G, ME) == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_reason_or_pass_never_raise(raw: bytes) -> None:
    assert envelopes.check(b"\x95" + raw, G, ME) in (
        None, envelopes.MALFORMED, envelopes.WRONG_CHAIN, envelopes.UNKNOWN_SENDER,
        envelopes.TOO_LARGE, envelopes.BAD_SIGNATURE,
    )  # fmt: skip


def test_votes_are_left_to_the_replica_which_checks_their_fields() -> None:
    vote = signed(m.Commit(0, 1, BLOCK.hash, 2), 2)
    flipped = vote[:-1] + bytes([vote[-1] ^ 1])
    assert envelopes.check(flipped, G, ME) is None  # small: decoded, then refused by signature
    decoded = m.decode_message(flipped, G.chain_id)
    assert not m.verify_signature(decoded, G)
