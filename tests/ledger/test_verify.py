"""Chain verification: a good chain passes; every altered byte and every lost key is found at the
height it belongs to; the stream verifier rejects what does not extend the chain."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from ledger import block as blocks
from ledger.errors import InvalidBlock, StoreError
from ledger.store import BlockStore
from ledger.verify import ChainVerifier, VerifyReport, verify_chain
from tests import factory

BLOCKS = 6
TXS_PER_BLOCK = 3
# Values up to this size have every byte flipped; larger ones (blocks, certificates) a sample.
SMALL_VALUE_BYTES = 64
# Large values: every SAMPLE_STEP-th byte plus the first and last EDGE_BYTES. The edges hold
# the msgpack headers and the signatures; the stride walks through every field in between.
# For this chain that is about 2,500 flips over 67 keys (6,200 value bytes): every byte of the
# 61 small values, about a quarter of the bytes of the 6 blocks and 6 certificates.
SAMPLE_STEP = 5
EDGE_BYTES = 12


@dataclasses.dataclass(frozen=True)
class Chain:
    net: factory.Network
    certified: list[tuple[blocks.Block, blocks.Certificate]]
    path: Path

    @property
    def genesis(self) -> Any:
        return self.net.genesis


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    net = factory.network()
    certified = list(factory.chain(net, BLOCKS, TXS_PER_BLOCK))
    path = tmp_path_factory.mktemp("verify") / "data"
    with BlockStore.open(path, net.genesis) as store:
        for block, cert in certified:
            store.append(block, cert)
    return Chain(net, certified, path)


def _audit(chain: Chain) -> VerifyReport:
    with BlockStore.open_for_audit(chain.path, chain.genesis) as store:
        return verify_chain(store, chain.genesis)


def test_a_good_chain_verifies_with_progress(chain: Chain) -> None:
    seen: list[tuple[int, int]] = []
    with BlockStore.open(chain.path, chain.genesis) as store:
        report = verify_chain(store, chain.genesis, progress=lambda h, n: seen.append((h, n)))
    assert report == VerifyReport(
        ok=True, blocks_checked=BLOCKS, txs_checked=BLOCKS * TXS_PER_BLOCK,
        first_bad_height=None, reason="",
    )  # fmt: skip
    assert seen == [(h, BLOCKS) for h in range(1, BLOCKS + 1)]
    assert _audit(chain).ok


def test_an_empty_store_verifies(tmp_path: Path) -> None:
    net = factory.network()
    with BlockStore.open(tmp_path / "data", net.genesis) as store:
        report = verify_chain(store, net.genesis)
    assert report.ok
    assert (report.blocks_checked, report.txs_checked) == (0, 0)


# --- Every key, every byte -------------------------------------------------------------------


def _owner_heights(chain: Chain) -> dict[str, dict[bytes, int]]:
    """Which height each indexed hash belongs to, from the chain itself (not the store)."""
    by_hash = {block.hash: block.height for block, _ in chain.certified}
    by_tx = {t.tx_id: block.height for block, _ in chain.certified for t in block.txs}
    return {"H": by_hash, "T": by_tx, "X": by_tx}


def _expected_height(key: bytes, owners: dict[str, dict[bytes, int]]) -> int | None:
    """The height whose check must fail when `key`'s value is damaged (None: opening fails).

    Derived from the key layout documented in ledger/store.py.
    """
    if key == b"meta":
        return None
    if key == b"head":
        return BLOCKS  # the head pointer belongs to the last block
    prefix, rest = key[:1], key[1:]
    if prefix in (b"B", b"C"):
        return int.from_bytes(rest, "big")
    if prefix in (b"H", b"T", b"X"):
        return owners[prefix.decode()][rest]
    if prefix == b"R":
        return int.from_bytes(rest[-12:-4], "big")
    if prefix == b"N":
        level, index = rest[0], int.from_bytes(rest[1:], "big")
        # A node is completed by its last leaf; leaf i is block i, leaf 0 is stored at 1.
        return max(1, ((index + 1) << level) - 1)
    raise AssertionError(f"a key outside the documented layout: {key!r}")


def _positions(length: int) -> list[int]:
    if length <= SMALL_VALUE_BYTES:
        return list(range(length))
    sampled = set(range(0, length, SAMPLE_STEP))
    sampled |= set(range(EDGE_BYTES)) | set(range(length - EDGE_BYTES, length))
    return sorted(sampled)


def _flipped(value: bytes, position: int) -> bytes:
    # One bit, a different one from byte to byte, so every bit position of a field is hit.
    damaged = bytearray(value)
    damaged[position] ^= 1 << (position % 8)
    return bytes(damaged)


def _items(path: Path) -> list[tuple[bytes, bytes]]:
    db = plyvel.DB(str(path))
    try:
        return list(db.iterator())
    finally:
        db.close()


@pytest.fixture(scope="module")
def items(chain: Chain) -> list[tuple[bytes, bytes]]:
    found = _items(chain.path)
    kinds = {k[:1] for k, _ in found if k not in (b"meta", b"head")}
    assert kinds == {b"B", b"C", b"H", b"T", b"X", b"R", b"N"}
    return found


@pytest.fixture
def audit_store(chain: Chain) -> Iterator[BlockStore]:
    with BlockStore.open_for_audit(chain.path, chain.genesis) as store:
        yield store


def _raw_db(store: BlockStore) -> Any:
    # Damage is written through the audit store's own LevelDB handle: reopening LevelDB for
    # each of thousands of flips would cost most of this file's time budget.
    return store._db


KINDS = ["head", "B", "C", "H", "T", "X", "R", "N"]


def _kind(key: bytes) -> str:
    return key.decode() if key in (b"meta", b"head") else key[:1].decode()


@pytest.mark.parametrize("kind", KINDS)
def test_every_flipped_byte_is_found_at_its_height(
    chain: Chain, items: list[tuple[bytes, bytes]], audit_store: BlockStore, kind: str
) -> None:
    owners = _owner_heights(chain)
    db = _raw_db(audit_store)
    selected = [(k, v) for k, v in items if _kind(k) == kind]
    assert selected
    flips = 0
    for key, value in selected:
        expected = _expected_height(key, owners)
        for position in _positions(len(value)):
            db.put(key, _flipped(value, position))
            try:
                report = verify_chain(audit_store, chain.genesis)
            finally:
                db.put(key, value)
            assert not report.ok, (key, position)
            assert report.first_bad_height == expected, (key, position, report)
            flips += 1
    assert flips >= len(selected)
    assert verify_chain(audit_store, chain.genesis).ok


def test_every_deleted_key_is_found_at_its_height(
    chain: Chain, items: list[tuple[bytes, bytes]], audit_store: BlockStore
) -> None:
    owners = _owner_heights(chain)
    db = _raw_db(audit_store)
    for key, value in items:
        if key == b"meta":
            continue
        db.delete(key)
        try:
            report = verify_chain(audit_store, chain.genesis)
        finally:
            db.put(key, value)
        assert not report.ok, key
        assert report.first_bad_height == _expected_height(key, owners), (key, report)
    assert verify_chain(audit_store, chain.genesis).ok


def _rewrite(path: Path, key: bytes, value: bytes | None) -> None:
    # No fsync: the next open in this process reads the log from the page cache anyway.
    db = plyvel.DB(str(path))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


def test_a_damaged_or_lost_meta_record_fails_opening(
    chain: Chain, items: list[tuple[bytes, bytes]]
) -> None:
    meta = dict(items)[b"meta"]
    damaged = [_flipped(meta, p) for p in range(len(meta))]
    try:
        for value in [*damaged, None]:
            _rewrite(chain.path, b"meta", value)
            # Both opens share the meta check; the audit one is the one that must not be lax.
            with pytest.raises(StoreError):
                BlockStore.open_for_audit(chain.path, chain.genesis)
        with pytest.raises(StoreError, match="not a CityLedger block store"):
            BlockStore.open(chain.path, chain.genesis)
    finally:
        _rewrite(chain.path, b"meta", meta)
    assert _audit(chain).ok


def test_a_damaged_head_fails_a_normal_open_and_is_named_by_an_audit(
    chain: Chain, items: list[tuple[bytes, bytes]]
) -> None:
    values = dict(items)
    head_keys = [b"head", b"B" + BLOCKS.to_bytes(8, "big"), b"C" + BLOCKS.to_bytes(8, "big")]
    try:
        for key in head_keys:
            for value in (_flipped(values[key], 0), _flipped(values[key], 9), None):
                _rewrite(chain.path, key, value)
                with pytest.raises(StoreError, match="head"):
                    BlockStore.open(chain.path, chain.genesis)
                assert _audit(chain).first_bad_height == BLOCKS
            _rewrite(chain.path, key, values[key])
    finally:
        for key in head_keys:
            _rewrite(chain.path, key, values[key])
    assert _audit(chain).ok


# --- The stream verifier ---------------------------------------------------------------------


def _stream(chain: Chain) -> ChainVerifier:
    return ChainVerifier(chain.genesis, lambda _tx_id: None)


def test_the_stream_verifier_advances_the_head(chain: Chain) -> None:
    verifier = _stream(chain)
    for block, cert in chain.certified:
        verified = verifier.feed(block.encode(), cert.encode())
        assert verified.block == block
        assert verified.certificate == cert
    last = chain.certified[-1][0]
    with BlockStore.open(chain.path, chain.genesis) as store:
        assert verifier.head == store.head
    assert (verifier.head.height, verifier.head.hash) == (BLOCKS, last.hash)
    assert (verifier.blocks_checked, verifier.txs_checked) == (BLOCKS, BLOCKS * TXS_PER_BLOCK)


def test_the_stream_verifier_refuses_gaps_replays_and_foreign_certificates(chain: Chain) -> None:
    (b1, c1), (b2, c2) = chain.certified[:2]
    with pytest.raises(InvalidBlock, match="does not extend"):
        _stream(chain).feed(b2.encode(), c2.encode())
    with pytest.raises(InvalidBlock, match="certificate"):
        _stream(chain).feed(b1.encode(), c2.encode())
    verifier = _stream(chain)
    verifier.feed(b1.encode(), c1.encode())
    with pytest.raises(InvalidBlock, match="does not extend"):
        verifier.feed(b1.encode(), c1.encode())
    with pytest.raises(InvalidBlock, match="malformed"):
        verifier.feed(b2.encode()[:-1], c2.encode())
    assert verifier.head.height == 1


def test_the_stream_verifier_finds_duplicates_through_tx_location(chain: Chain) -> None:
    block = chain.certified[0][0]
    elsewhere = {block.txs[1].tx_id: (9, 0)}
    verifier = ChainVerifier(chain.genesis, elsewhere.get)
    with pytest.raises(InvalidBlock, match="tx 1: duplicate"):
        verifier.feed(block.encode(), chain.certified[0][1].encode())
    here = {t.tx_id: (1, i) for i, t in enumerate(block.txs)}
    ChainVerifier(chain.genesis, here.get).feed(block.encode(), chain.certified[0][1].encode())
