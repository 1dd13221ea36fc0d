"""Blocks and certificates: bytes and hashes, the chain-extension rule, certificate verification."""

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from ledger import block as blocks
from ledger import crypto, genesis, merkle
from ledger import tx as txs
from ledger.block import Block, BlockHeader, Certificate, ChainHead
from ledger.encoding import encode
from ledger.errors import InvalidBlock
from tests import factory

NOW = factory.BASE_TIME_MS


def never(_tx_id: bytes) -> bool:
    return False


def build(blocks_count: int = 4, txs_per_block: int = 3) -> tuple[factory.Network, list[Block]]:
    net = factory.network()
    return net, [b for b, _ in factory.chain(net, blocks_count, txs_per_block)]


def head_after(net: factory.Network, chain: list[Block]) -> ChainHead:
    head = ChainHead.genesis(net.genesis)
    for b in chain:
        head = head.advance(b)
    return head


def with_header(block: Block, **changes: Any) -> Block:
    header = dataclasses.replace(block.header, **changes)
    return Block(header, block.txs, header.hash())


def with_txs(head: ChainHead, body: tuple[txs.Transaction, ...]) -> Block:
    return blocks.make_block(head, body, NOW + 5000, 0, 0)


def rejects(block: Block, head: ChainHead, g: genesis.Genesis, match: str, **kwargs: Any) -> None:
    kwargs.setdefault("is_committed", never)
    with pytest.raises(InvalidBlock, match=match):
        blocks.check_block(block, head, g, **kwargs)


# --- Bytes and hashes ------------------------------------------------------------------------


def test_make_decode_round_trip() -> None:
    _, chain = build()
    for b in chain:
        again = blocks.decode_block(b.encode())
        assert again == b
        assert again.hash == b.hash
        assert again.encode() == b.encode()


def test_block_wire_form_and_hash() -> None:
    _, chain = build(2, 2)
    b = chain[1]
    h = b.header
    header_list = [
        2,
        h.height,
        h.prev_hash,
        h.tx_root,
        h.tx_count,
        h.history_root,
        h.timestamp_ms,
        h.view,
        h.proposer,
        h.outcome_root,
    ]
    assert h.to_list() == header_list
    assert b.encode() == encode([header_list, [t.raw for t in b.txs], ["", ""]])
    leaves = [encode([t.tx_id, ""]) for t in b.txs]
    assert h.outcome_root == merkle.root(leaves)
    assert b.hash == crypto.sha256(encode(header_list))
    assert b.hash == h.hash()


def test_hash_is_stable_and_depends_on_every_header_field() -> None:
    _, chain = build(2, 1)
    b = chain[1]
    assert blocks.decode_block(b.encode()).hash == b.hash
    changes = {
        "height": 3,
        "prev_hash": bytes(32),
        "tx_root": bytes(32),
        "tx_count": 2,
        "history_root": bytes(32),
        "timestamp_ms": b.header.timestamp_ms + 1,
        "view": 1,
        "proposer": 1,
        "outcome_root": bytes(32),
    }
    hashes = {with_header(b, **{name: value}).hash for name, value in changes.items()}
    assert len(hashes) == len(changes)
    assert b.hash not in hashes


def test_tx_root_and_history_root() -> None:
    net, chain = build(5, 3)
    leaves = [net.genesis.hash]
    for b in chain:
        assert b.header.tx_root == merkle.root([t.tx_id for t in b.txs])
        # Block h commits to the history of blocks 0..h-1 (leaf 0 is the genesis hash).
        assert b.header.history_root == merkle.root(leaves)
        assert len(leaves) == b.height
        leaves.append(b.hash)
    assert chain[0].header.prev_hash == net.genesis.hash
    assert chain[0].header.history_root == merkle.leaf_hash(net.genesis.hash)
    assert head_after(net, chain).history.root() == merkle.root(leaves)


def test_empty_block() -> None:
    net = factory.network()
    b = blocks.make_block(ChainHead.genesis(net.genesis), (), NOW, 0, 0)
    assert b.header.tx_root == merkle.EMPTY_ROOT == crypto.sha256(b"")
    assert blocks.decode_block(b.encode()) == b
    blocks.check_block(b, ChainHead.genesis(net.genesis), net.genesis, is_committed=never)


def test_old_block_proven_against_a_newer_head() -> None:
    net, chain = build(9, 1)
    leaves = [net.genesis.hash] + [b.hash for b in chain]
    newest = chain[-1]  # height 9: its history root covers leaves 0..8
    for old in chain[:-1]:
        proof = merkle.inclusion_proof(leaves[: newest.height], old.height)
        assert merkle.verify_inclusion(
            old.hash, old.height, newest.height, proof, newest.header.history_root
        )
    a, b = chain[2], chain[7]  # two certified heads: histories of 3 and 8 leaves
    proof = merkle.consistency_proof(leaves[: b.height], a.height)
    assert merkle.verify_consistency(
        a.height, b.height, a.header.history_root, b.header.history_root, proof
    )


def test_certificate_round_trip_and_wire_form() -> None:
    net, chain = build(1, 1)
    cert = net.certify(chain[0])
    assert cert.encode() == encode(
        [cert.height, cert.block_hash, cert.view, [[i, s] for i, s in cert.votes]]
    )
    assert blocks.decode_certificate(cert.encode()) == cert
    assert blocks.commit_payload("c", 2, 3, b"h") == encode(["c", 2, 3, b"h"])


# --- check_block: a valid chain and every fault ----------------------------------------------


def test_valid_chain_is_accepted() -> None:
    net, chain = build(6, 4)
    head = ChainHead.genesis(net.genesis)
    committed: set[bytes] = set()
    for b in chain:
        blocks.check_block(b, head, net.genesis, is_committed=committed.__contains__)
        committed.update(t.tx_id for t in b.txs)
        head = head.advance(b)
    assert head.height == 6


@pytest.fixture
def setup() -> tuple[factory.Network, ChainHead, Block]:
    """A network, the head after block 2, and a valid block 3 on top of it."""
    net, chain = build(3, 2)
    return net, head_after(net, chain[:2]), chain[2]


Setup = tuple[factory.Network, ChainHead, Block]

HEADER_FAULTS: dict[str, tuple[Callable[[Block, ChainHead], Block], str]] = {
    "height skips": (lambda b, h: with_header(b, height=h.height + 2), "does not extend"),
    "height repeats": (lambda b, h: with_header(b, height=h.height), "does not extend"),
    "wrong prev hash": (lambda b, _h: with_header(b, prev_hash=bytes(32)), "does not extend"),
    "prev hash is the history root": (
        lambda b, _h: with_header(b, prev_hash=b.header.history_root),
        "does not extend",
    ),
    "wrong history root": (
        lambda b, h: with_header(b, history_root=merkle.root([h.hash])),
        "wrong history root",
    ),
    "wrong tx root": (lambda b, _h: with_header(b, tx_root=merkle.EMPTY_ROOT), "wrong tx root"),
    "tx root over reordered txs": (
        lambda b, _h: Block(b.header, b.txs[::-1], b.hash),
        "wrong tx root",
    ),
    "a tx dropped": (lambda b, _h: Block(b.header, b.txs[1:], b.hash), "another number of txs"),
    "tx count off by one": (
        lambda b, _h: with_header(b, tx_count=b.header.tx_count + 1),
        "another number of txs",
    ),
    "timestamp goes backwards": (
        lambda b, h: with_header(b, timestamp_ms=h.timestamp_ms - 1),
        "stamped before its parent",
    ),
    "proposer not primary": (
        lambda b, _h: with_header(b, proposer=1),
        "not the primary of its view",
    ),
    "primary of another view": (
        lambda b, _h: with_header(b, view=2, proposer=1),
        "not the primary of its view",
    ),
}


@pytest.mark.parametrize(("fault", "match"), HEADER_FAULTS.values(), ids=HEADER_FAULTS.keys())
def test_header_fault(setup: Setup, fault: Callable[[Block, ChainHead], Block], match: str) -> None:
    net, head, good = setup
    blocks.check_block(good, head, net.genesis, is_committed=never)
    rejects(fault(good, head), head, net.genesis, match)


def test_same_timestamp_as_parent_and_later_views_are_fine(setup: Setup) -> None:
    net, head, good = setup
    for view in (0, 1, 5, 2**40):
        b = with_header(
            good,
            timestamp_ms=head.timestamp_ms,
            view=view,
            proposer=view % 4,
            tx_root=good.header.tx_root,
        )
        # The txs were stamped 10 ms before the original block time: still inside the window.
        blocks.check_block(b, head, net.genesis, is_committed=never)


def small_genesis(net: factory.Network, **params: int) -> genesis.Genesis:
    doc = net.genesis.to_dict()
    doc["consensus"].update(params)
    return genesis.from_dict(doc)


def test_too_many_txs(setup: Setup) -> None:
    net, head, good = setup
    assert len(good.txs) == 2
    blocks.check_block(good, head, small_genesis(net, block_txs_max=2), is_committed=never)
    rejects(good, head, small_genesis(net, block_txs_max=1), "more than 1 txs")


def test_too_many_bytes() -> None:
    net = factory.network()
    head = ChainHead.genesis(net.genesis)
    clerk = net.client_for("fiscal/")
    body = tuple(net.tx(clerk, f"fiscal/big{i}", {"pad": "x" * 16_000}, NOW) for i in range(5))
    b = with_txs(head, body)
    assert sum(len(t.raw) for t in body) > 64 * 1024
    blocks.check_block(b, head, net.genesis, is_committed=never)
    rejects(b, head, small_genesis(net, block_bytes_max=64 * 1024), "larger than 65536 bytes")


def test_duplicate_tx_in_block(setup: Setup) -> None:
    net, head, good = setup
    b = with_txs(head, (good.txs[0], good.txs[1], good.txs[0]))
    rejects(b, head, net.genesis, "holds a tx twice")


def test_already_committed_tx(setup: Setup) -> None:
    net, head, good = setup
    target = good.txs[1].tx_id
    rejects(
        good,
        head,
        net.genesis,
        "tx 1: duplicate: already committed",
        is_committed=lambda tx_id: tx_id == target,
    )


def forged(tx: txs.Transaction) -> txs.Transaction:
    signature = bytearray(tx.signature)
    signature[0] ^= 1
    items = [
        1,
        tx.chain_id,
        tx.client_id,
        tx.nonce,
        tx.timestamp_ms,
        tx.key,
        tx.type,
        tx.body,
        bytes(signature),
    ]
    return txs.decode_tx(encode(items))


def test_bad_tx_signature(setup: Setup) -> None:
    net, head, good = setup
    b = with_txs(head, (good.txs[0], forged(good.txs[1])))
    rejects(b, head, net.genesis, "tx 1: bad_signature")


def test_signatures_checked_skips_only_the_named_txs(setup: Setup) -> None:
    net, head, good = setup
    bad = forged(good.txs[1])
    b = with_txs(head, (good.txs[0], bad))
    blocks.check_block(b, head, net.genesis, is_committed=never, signatures_checked={bad.tx_id})
    rejects(b, head, net.genesis, "bad_signature", signatures_checked={good.txs[0].tx_id})


def test_tx_outside_namespace(setup: Setup) -> None:
    net, head, _ = setup
    clerk = net.client_for("fiscal/")
    b = with_txs(head, (net.tx(clerk, "claims/1", {}, NOW),))
    rejects(b, head, net.genesis, "tx 0: forbidden_namespace")


def test_tx_from_another_chain_or_unknown_client(setup: Setup) -> None:
    net, head, _ = setup
    other = factory.network(chain_id="othercity")
    clerk = other.client_for("fiscal/")
    rejects(
        with_txs(head, (other.tx(clerk, "fiscal/1", {}, NOW),)),
        head,
        net.genesis,
        "tx 0: wrong_chain",
    )
    stranger = txs.create(
        factory.seeded_key("stranger"),
        chain_id=net.genesis.chain_id,
        client_id="stranger",
        nonce=0,
        timestamp_ms=NOW,
        key="fiscal/1",
        type_="record",
        body={},
    )
    rejects(with_txs(head, (stranger,)), head, net.genesis, "tx 0: unknown_client")


def test_tx_timestamps_checked_against_the_block_stamp(setup: Setup) -> None:
    net, head, _ = setup
    clerk = net.client_for("fiscal/")
    params = net.genesis.params
    stamp = NOW + 5000  # with_txs stamps blocks here
    fine = (
        net.tx(clerk, "fiscal/a", {}, stamp - params.tx_ttl_ms),
        net.tx(clerk, "fiscal/b", {}, stamp + params.clock_skew_ms),
    )
    blocks.check_block(with_txs(head, fine), head, net.genesis, is_committed=never)
    stale = net.tx(clerk, "fiscal/c", {}, stamp - params.tx_ttl_ms - 1)
    rejects(with_txs(head, (stale,)), head, net.genesis, "tx 0: stale_timestamp")
    future = net.tx(clerk, "fiscal/d", {}, stamp + params.clock_skew_ms + 1)
    rejects(with_txs(head, (future,)), head, net.genesis, "tx 0: future_timestamp")


def test_rejection_leaves_the_head_alone(setup: Setup) -> None:
    net, head, good = setup
    before = dataclasses.replace(head)
    rejects(with_header(good, height=9), head, net.genesis, "does not extend")
    assert head == before


# --- decode_block: malformed bytes ------------------------------------------------------------


def header_with(block: Block, index: int, value: Any) -> bytes:
    h = block.header.to_list()
    h[index] = value
    return encode([h, [t.raw for t in block.txs]])


MALFORMED_BLOCKS: dict[str, Callable[[Block], bytes]] = {
    "not msgpack": lambda _b: b"\xc1",
    "trailing bytes": lambda b: b.encode() + b"\x00",
    "three items": lambda b: encode([b.header.to_list(), [], 0]),
    "header of 8": lambda b: encode([b.header.to_list()[:8], []]),
    "header version 2": lambda b: header_with(b, 0, 2),
    "height 0": lambda b: header_with(b, 1, 0),
    "negative height": lambda b: header_with(b, 1, -1),
    "height past 2**63-1": lambda b: header_with(b, 1, 2**63),
    "prev hash of 31 bytes": lambda b: header_with(b, 2, bytes(31)),
    "prev hash as str": lambda b: header_with(b, 2, "0" * 32),
    "tx root of 33 bytes": lambda b: header_with(b, 3, bytes(33)),
    "tx count negative": lambda b: header_with(b, 4, -1),
    "tx count past the block limit": lambda b: header_with(b, 4, 10_001),
    "history root nil": lambda b: header_with(b, 5, None),
    "timestamp negative": lambda b: header_with(b, 6, -1),
    "view as bool": lambda b: header_with(b, 7, value=False),
    "proposer 64": lambda b: header_with(b, 8, 64),
    "txs not an array": lambda b: encode([b.header.to_list(), b""]),
    "tx as an array": lambda b: encode([b.header.to_list(), [[1, 2]]]),
    "tx as str": lambda b: encode([b.header.to_list(), ["tx"]]),
    "tx not a tx": lambda b: encode([b.header.to_list(), [b"\x01"]]),
    "too many txs": lambda b: encode([b.header.to_list(), [b""] * (10_000 + 1)]),
}


@pytest.mark.parametrize("make", MALFORMED_BLOCKS.values(), ids=MALFORMED_BLOCKS.keys())
def test_malformed_block(make: Callable[[Block], bytes]) -> None:
    _, chain = build(1, 1)
    with pytest.raises(InvalidBlock, match=r"^malformed block: "):
        blocks.decode_block(make(chain[0]))


# --- Certificates -----------------------------------------------------------------------------


def vote(
    net: factory.Network,
    index: int,
    *,
    view: int,
    height: int,
    block_hash: bytes,
    chain_id: str | None = None,
    domain: crypto.Domain = crypto.Domain.COMMIT,
) -> tuple[int, bytes]:
    payload = blocks.commit_payload(chain_id or net.genesis.chain_id, view, height, block_hash)
    return index, crypto.sign(net.validator_keys[index], domain, payload)


def votes_for(
    net: factory.Network, b: Block, indices: list[int], view: int = 0
) -> tuple[tuple[int, bytes], ...]:
    return tuple(vote(net, i, view=view, height=b.height, block_hash=b.hash) for i in indices)


@pytest.fixture
def certified() -> tuple[factory.Network, Block]:
    net, chain = build(2, 1)
    return net, chain[1]


Certified = tuple[factory.Network, Block]


@pytest.mark.parametrize("indices", [[0, 1, 2], [1, 2, 3], [0, 2, 3], [0, 1, 2, 3]])
def test_certificate_accepted(certified: Certified, indices: list[int]) -> None:
    net, b = certified
    cert = Certificate(b.height, b.hash, 0, votes_for(net, b, indices))
    blocks.verify_certificate(cert, b, net.genesis)
    blocks.verify_certificate(blocks.decode_certificate(cert.encode()), b, net.genesis)


def test_certificate_from_the_factory_and_in_a_later_view(certified: Certified) -> None:
    net, b = certified
    blocks.verify_certificate(net.certify(b), b, net.genesis)
    blocks.verify_certificate(net.certify(b, view=3), b, net.genesis)


def test_quorum_follows_n() -> None:
    net = factory.network(validators=7)  # f = 2: 5 votes needed
    b = blocks.make_block(ChainHead.genesis(net.genesis), (), NOW, 0, 0)
    blocks.verify_certificate(
        Certificate(1, b.hash, 0, votes_for(net, b, [0, 2, 3, 5, 6])), b, net.genesis
    )
    with pytest.raises(InvalidBlock, match="4 votes, 5 needed"):
        blocks.verify_certificate(
            Certificate(1, b.hash, 0, votes_for(net, b, [0, 2, 3, 5])), b, net.genesis
        )


CertFault = Callable[[factory.Network, Block], Certificate]


def _cert(b: Block, votes: Any, view: int = 0) -> Certificate:
    return Certificate(b.height, b.hash, view, tuple(votes))


def _swap_signatures(net: factory.Network, b: Block) -> Certificate:
    (i0, s0), (i1, s1), (i2, s2) = votes_for(net, b, [0, 1, 2])
    return _cert(b, [(i0, s1), (i1, s0), (i2, s2)])


CERT_FAULTS: dict[str, tuple[CertFault, str]] = {
    "too few votes": (lambda n, b: _cert(b, votes_for(n, b, [0, 1])), "2 votes, 3 needed"),
    "no votes": (lambda _n, b: _cert(b, []), "0 votes, 3 needed"),
    "duplicated index": (
        lambda n, b: _cert(b, votes_for(n, b, [0, 1, 1])),
        "not sorted by distinct",
    ),
    "one vote three times": (
        lambda n, b: _cert(b, votes_for(n, b, [2, 2, 2])),
        "not sorted by distinct",
    ),
    "unsorted indices": (
        lambda n, b: _cert(b, votes_for(n, b, [1, 0, 2])),
        "not sorted by distinct",
    ),
    "unknown index": (
        lambda n, b: _cert(b, [*votes_for(n, b, [0, 1]), (4, bytes(64))]),
        "unknown validator index 4",
    ),
    "forged signature": (
        lambda n, b: _cert(b, [*votes_for(n, b, [0, 1]), (2, bytes(64))]),
        "validator 2 is invalid",
    ),
    "signatures swapped between validators": (_swap_signatures, "validator 0 is invalid"),
    "vote over another view": (
        lambda n, b: _cert(b, [*votes_for(n, b, [0, 1]), *votes_for(n, b, [2], view=1)]),
        "validator 2 is invalid",
    ),
    "certificate claims another view": (
        lambda n, b: _cert(b, votes_for(n, b, [0, 1, 2]), view=1),
        "validator 0 is invalid",
    ),
    "vote over another height": (
        lambda n, b: _cert(
            b,
            [*votes_for(n, b, [0, 1]), vote(n, 2, view=0, height=b.height + 1, block_hash=b.hash)],
        ),
        "validator 2 is invalid",
    ),
    "vote over another block": (
        lambda n, b: _cert(
            b, [vote(n, 0, view=0, height=b.height, block_hash=bytes(32)), *votes_for(n, b, [1, 2])]
        ),
        "validator 0 is invalid",
    ),
    "vote for another chain": (
        lambda n, b: _cert(
            b,
            [
                *votes_for(n, b, [0, 1]),
                vote(n, 2, view=0, height=b.height, block_hash=b.hash, chain_id="othercity"),
            ],
        ),
        "validator 2 is invalid",
    ),
    "vote in the TX domain": (
        lambda n, b: _cert(
            b,
            [
                *votes_for(n, b, [0, 1]),
                vote(n, 2, view=0, height=b.height, block_hash=b.hash, domain=crypto.Domain.TX),
            ],
        ),
        "validator 2 is invalid",
    ),
    "certificate of another block": (
        lambda n, b: Certificate(b.height, bytes(32), 0, votes_for(n, b, [0, 1, 2])),
        "another block",
    ),
    "certificate of another height": (
        lambda n, b: Certificate(b.height + 1, b.hash, 0, votes_for(n, b, [0, 1, 2])),
        "another block",
    ),
}


@pytest.mark.parametrize(("fault", "match"), CERT_FAULTS.values(), ids=CERT_FAULTS.keys())
def test_certificate_rejected(certified: Certified, fault: CertFault, match: str) -> None:
    net, b = certified
    cert = fault(net, b)
    with pytest.raises(InvalidBlock, match=match):
        blocks.verify_certificate(cert, b, net.genesis)


def test_valid_certificate_of_another_block_is_rejected() -> None:
    net, chain = build(3, 1)
    cert = net.certify(chain[1])
    blocks.verify_certificate(cert, chain[1], net.genesis)
    with pytest.raises(InvalidBlock, match="another block"):
        blocks.verify_certificate(cert, chain[2], net.genesis)
    tampered = with_header(chain[1], timestamp_ms=chain[1].header.timestamp_ms + 1)
    with pytest.raises(InvalidBlock, match="another block"):
        blocks.verify_certificate(cert, tampered, net.genesis)


def test_certificate_from_another_network_is_rejected(certified: Certified) -> None:
    net, b = certified
    impostors = factory.network(chain_id="othercity")
    impostors.genesis = net.genesis  # same chain id and members on paper, other keys
    impostors.validator_keys = [factory.seeded_key(f"impostor/{i}") for i in range(4)]
    with pytest.raises(InvalidBlock, match="is invalid"):
        blocks.verify_certificate(impostors.certify(b), b, net.genesis)


MALFORMED_CERTS: dict[str, Callable[[Certificate], bytes]] = {
    "not msgpack": lambda _c: b"\xc1",
    "three items": lambda c: encode([c.height, c.block_hash, c.view]),
    "height 0": lambda c: encode([0, c.block_hash, c.view, []]),
    "hash of 31 bytes": lambda c: encode([c.height, c.block_hash[:31], c.view, []]),
    "view negative": lambda c: encode([c.height, c.block_hash, -1, []]),
    "votes a map": lambda c: encode([c.height, c.block_hash, c.view, {}]),
    "vote of 3 items": lambda c: encode([c.height, c.block_hash, c.view, [[0, bytes(64), 1]]]),
    "vote index 64": lambda c: encode([c.height, c.block_hash, c.view, [[64, bytes(64)]]]),
    "vote index as str": lambda c: encode([c.height, c.block_hash, c.view, [["0", bytes(64)]]]),
    "vote signature of 63 bytes": lambda c: encode(
        [c.height, c.block_hash, c.view, [[0, bytes(63)]]]
    ),
    "65 votes": lambda c: encode(
        [c.height, c.block_hash, c.view, [[i % 64, bytes(64)] for i in range(65)]]
    ),
    "oversize": lambda c: encode([c.height, c.block_hash, c.view, [[0, bytes(64)]], "x" * 5000]),
}


@pytest.mark.parametrize("make", MALFORMED_CERTS.values(), ids=MALFORMED_CERTS.keys())
def test_malformed_certificate(certified: Certified, make: Callable[[Certificate], bytes]) -> None:
    net, b = certified
    with pytest.raises(InvalidBlock, match=r"^malformed certificate: "):
        blocks.decode_certificate(make(net.certify(b)))


def test_largest_certificate_fits_the_byte_limit() -> None:
    votes = [[i, bytes(64)] for i in range(64)]
    raw = encode([blocks.HEIGHT_MAX, bytes(32), blocks.HEIGHT_MAX, votes])
    assert len(raw) <= blocks.CERTIFICATE_BYTES_MAX
    assert len(blocks.decode_certificate(raw).votes) == 64


def test_chain_head() -> None:
    net, chain = build(2, 1)
    head = ChainHead.genesis(net.genesis)
    assert (head.height, head.hash, head.timestamp_ms) == (0, net.genesis.hash, 0)
    assert head.history.size == 1
    head = head.advance(chain[0])
    assert (head.height, head.hash, head.history.size) == (1, chain[0].hash, 2)
    assert head.timestamp_ms == chain[0].header.timestamp_ms
    assert isinstance(chain[0].header, BlockHeader)
