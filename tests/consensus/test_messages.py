"""Consensus messages: round trips, signatures, and the decoder's contract under fuzzing."""

import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus import messages as m
from ledger import block as blocks
from ledger import crypto
from tests import factory

NET = factory.network(4)
G = NET.genesis
BLOCK, CERT = next(factory.chain(NET, 1, 2))


def signed(msg: m.M, sender: int = 1) -> m.M:
    return m.sign(msg, NET.validator_keys[sender], G.chain_id)


def samples() -> list[m.Message]:
    proof = m.PreparedProof(
        0,
        1,
        BLOCK,
        tuple(
            (i, crypto.sign(NET.validator_keys[i], crypto.Domain.PEER,
                            m.prepare_payload(G.chain_id, i, 0, 1, BLOCK.hash)))
            for i in range(3)
        ),
    )  # fmt: skip
    vc = signed(m.ViewChange(1, 0, G.hash, None, (proof,), 1))
    vc_cert = signed(m.ViewChange(2, 1, BLOCK.hash, CERT, (), 2), 2)
    return [
        signed(m.PrePrepare(0, 1, BLOCK, 0), 0),
        signed(m.Prepare(0, 1, BLOCK.hash, 1)),
        signed(m.Commit(0, 1, BLOCK.hash, 1)),
        signed(m.Checkpoint(4, BLOCK.hash, 1)),
        vc,
        vc_cert,
        signed(m.NewView(1, (vc,), 1)),
        signed(m.Status(3, 7, 1)),
        signed(m.TxBatch(BLOCK.txs, 1)),
    ]


@pytest.mark.parametrize("msg", samples(), ids=lambda x: type(x).__name__)
def test_round_trip_and_signature(msg: m.Message) -> None:
    raw = m.encode_message(msg, G.chain_id)
    back = m.decode_message(raw, G.chain_id)
    assert m.encode_message(back, G.chain_id) == raw
    assert m.verify_signature(back, G)
    with pytest.raises(m.InvalidMessage, match="chain"):
        m.decode_message(m.encode_message(msg, "otherchain"), G.chain_id)


def test_commit_signature_is_a_certificate_vote() -> None:
    commit = signed(m.Commit(0, BLOCK.height, BLOCK.hash, 2), 2)
    cert = blocks.Certificate(BLOCK.height, BLOCK.hash, 0, ((2, commit.signature),))
    payload = blocks.commit_payload(G.chain_id, 0, BLOCK.height, BLOCK.hash)
    assert crypto.verify(G.validators[2].key, crypto.Domain.COMMIT, payload, cert.votes[0][1])


@pytest.mark.parametrize("msg", samples(), ids=lambda x: type(x).__name__)
def test_changed_field_or_sender_breaks_signature(msg: m.Message) -> None:
    assert not m.verify_signature(dataclasses.replace(msg, sender=(msg.sender + 1) % 4), G)
    assert not m.verify_signature(dataclasses.replace(msg, signature=bytes(64)), G)


def test_a_prepare_signature_is_no_commit() -> None:
    prepare = signed(m.Prepare(0, 1, BLOCK.hash, 1))
    as_commit = m.Commit(0, 1, BLOCK.hash, 1, prepare.signature)
    assert not m.verify_signature(as_commit, G)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_decoder_contract_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(m.InvalidMessage):
        m.decode_message(data, G.chain_id)


_RAW = [m.encode_message(x, G.chain_id) for x in samples()]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_RAW), st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 3))
def test_decoder_contract_on_mutations(raw: bytes, where: int, value: int, how: int) -> None:
    pos = where % len(raw)
    mutated = {
        0: raw[:pos] + bytes([value]) + raw[pos + 1 :],
        1: raw[:pos],
        2: raw[:pos] + bytes([value]) + raw[pos:],
        3: raw[:pos] + raw[pos + 1 :],
    }[how]
    try:
        msg = m.decode_message(mutated, G.chain_id)
    except m.InvalidMessage:
        return
    # What still decodes is structurally valid; its signature decides whether it is believed.
    assert m.encode_message(msg, G.chain_id) == mutated


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40)
    | st.text(max_size=10) | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 12), values, values)
def test_decoder_contract_on_structured_values(kind: int, body: object, extra: object) -> None:
    for envelope in ([kind, G.chain_id, 1, body, bytes(64)], [kind, G.chain_id, extra, body]):
        try:
            raw = msgpack.packb(envelope, use_bin_type=True)
        except (ValueError, OverflowError):
            continue  # msgpack cannot even represent it (ints beyond 64 bits)
        with contextlib.suppress(m.InvalidMessage):
            m.decode_message(raw, G.chain_id)
