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
        BLOCK.hash,
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
        signed(m.BlockRequest((BLOCK.hash, CERT.block_hash), 1)),
        signed(m.BlockReply(BLOCK, 1)),
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


# --- byte bounds of the view change --------------------------------------------------------

SIM_NODES_MAX = 13  # the largest network the simulator runs (make test, sweeps)
LONG_CHAIN_ID = "c" * 64  # ID_BYTES_MAX: the longest chain id


def worst_new_view(validators: int) -> m.NewView:
    """The largest NewView the decoder takes among `validators`: a ViewChange of each, each with
    a full window of prepared proofs, every vote present and every integer at its widest."""
    votes = tuple((i, bytes(64)) for i in range(validators))
    top = m.VIEW_MAX
    cert = blocks.Certificate(top, bytes(32), top, votes)
    proofs = tuple(
        m.PreparedProof(top, top - m.PREPARED_MAX + k, bytes(32), votes)
        for k in range(m.PREPARED_MAX)
    )
    vcs = tuple(
        m.ViewChange(top, top, bytes(32), cert, proofs, i, bytes(64)) for i in range(validators)
    )
    return m.NewView(top, vcs, validators - 1, bytes(64))


def test_the_worst_new_view_of_the_largest_simulated_network_is_under_its_bound() -> None:
    raw = m.encode_message(worst_new_view(SIM_NODES_MAX), LONG_CHAIN_ID)
    bound = m.new_view_bytes_max(SIM_NODES_MAX)
    assert len(raw) <= bound < 1024 * 1024  # under 1 MiB, whatever the blocks weigh
    assert len(raw) > bound * 0.8  # and the bound is not loose (headers counted at 5 bytes)
    back = m.decode_message(raw, LONG_CHAIN_ID, validators=SIM_NODES_MAX)
    assert isinstance(back, m.NewView)
    assert m.encode_message(back, LONG_CHAIN_ID) == raw
    nested = m.encode_message(back.view_changes[0], LONG_CHAIN_ID)
    assert len(nested) <= m.view_change_bytes_max(SIM_NODES_MAX)
    assert m.new_view_bytes_max(len(G.validators)) <= m.NEW_VIEW_BYTES_MAX


def test_a_new_view_over_its_bound_is_refused_before_it_is_decoded() -> None:
    raw = m.encode_message(worst_new_view(SIM_NODES_MAX), LONG_CHAIN_ID)
    with pytest.raises(m.InvalidMessage) as refused:  # too large for a network of 10
        m.decode_message(raw, LONG_CHAIN_ID, validators=10)
    assert refused.value.reason == m.Reason.TOO_LARGE
    padded = raw[:2] + bytes(m.new_view_bytes_max(SIM_NODES_MAX))  # a NewView's head, then junk
    with pytest.raises(m.InvalidMessage) as refused:
        m.decode_message(padded, LONG_CHAIN_ID, validators=SIM_NODES_MAX)
    assert refused.value.reason == m.Reason.TOO_LARGE


def test_view_changes_and_block_requests_are_bounded_too() -> None:
    vc = worst_new_view(SIM_NODES_MAX).view_changes[0]
    raw = m.encode_message(vc, LONG_CHAIN_ID)
    assert len(raw) <= m.view_change_bytes_max(SIM_NODES_MAX)
    with pytest.raises(m.InvalidMessage) as refused:
        m.decode_message(raw, LONG_CHAIN_ID, validators=4)
    assert refused.value.reason == m.Reason.TOO_LARGE
    request = m.BlockRequest(tuple(bytes([i]) * 32 for i in range(m.PREPARED_MAX)), 1, bytes(64))
    assert len(m.encode_message(request, LONG_CHAIN_ID)) <= m.BLOCK_REQUEST_BYTES_MAX
    too_many = dataclasses.replace(request, hashes=(*request.hashes, bytes(32)))
    with pytest.raises(m.InvalidMessage):
        m.decode_message(m.encode_message(too_many, LONG_CHAIN_ID), LONG_CHAIN_ID)
