"""The block store: round trips through every read API, refusals that change nothing, reopening,
foreign and damaged stores, history proofs from stored nodes, and the cost of opening."""

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from ledger import block as blocks
from ledger import crypto, leveldb, merkle
from ledger.encoding import encode
from ledger.errors import InvalidBlock, StoreError
from ledger.store import BlockStore
from tests import factory

BLOCKS = 6
TXS_PER_BLOCK = 5

Certified = list[tuple[blocks.Block, blocks.Certificate]]


@pytest.fixture(scope="module")
def net() -> factory.Network:
    return factory.network()


# Blocks past the factory's write records again, so that records have several versions (two
# in one block), and one of them is "claims/rec-1", a prefix of the factory's "claims/rec-11".
REWRITES = (("fiscal/rec-8", "claims/rec-1", "fiscal/rec-8"), ("fiscal/rec-8", "claims/rec-11"))


@pytest.fixture(scope="module")
def certified(net: factory.Network) -> Certified:
    # One chain per module: the factory's nonces advance, so a second chain would differ.
    out = list(factory.chain(net, BLOCKS - len(REWRITES), TXS_PER_BLOCK))
    head = blocks.ChainHead.genesis(net.genesis)
    for block, _ in out:
        head = head.advance(block)
    for keys in REWRITES:
        now = head.timestamp_ms + 1000
        body = tuple(
            net.tx(net.client_for(key.split("/")[0] + "/"), key, {"version": i}, now - 5)
            for i, key in enumerate(keys)
        )
        block = blocks.make_block(head, body, now, 0, 0)
        out.append((block, net.certify(block)))
        head = head.advance(block)
    return out


@pytest.fixture
def store(tmp_path: Path, net: factory.Network, certified: Certified) -> Iterator[BlockStore]:
    with BlockStore.open(tmp_path / "data", net.genesis) as opened:
        for block, cert in certified:
            opened.append(block, cert)
        yield opened


def _dump(path: Path) -> list[tuple[bytes, bytes]]:
    db = plyvel.DB(str(path))
    try:
        return list(db.iterator())
    finally:
        db.close()


# --- Round trips -----------------------------------------------------------------------------


def test_an_empty_store_has_the_genesis_head(tmp_path: Path, net: factory.Network) -> None:
    with BlockStore.open(tmp_path / "data", net.genesis) as store:
        assert store.head == blocks.ChainHead.genesis(net.genesis)
        assert store.height == 0
        assert store.block(1) is None
        assert store.latest_record("fiscal/rec-1") is None
        assert list(store.iter_certified(1, 10)) == []
        assert store.history_inclusion_proof(1, 0) == []


def test_blocks_certificates_and_hashes_round_trip(store: BlockStore, certified: Certified) -> None:
    for block, cert in certified:
        assert store.raw_block(block.height) == block.encode()
        assert store.block(block.height) == block
        assert store.raw_certificate(block.height) == cert.encode()
        assert store.certificate(block.height) == cert
        assert store.height_of(block.hash) == block.height
    last = certified[-1][0]
    assert (store.height, store.head.hash, store.head.timestamp_ms) == (
        BLOCKS, last.hash, last.header.timestamp_ms,
    )  # fmt: skip
    assert store.iter_certified(1, BLOCKS).__next__() == certified[0]
    assert list(store.iter_certified(1, BLOCKS)) == certified
    assert list(store.iter_certified(3, 4)) == certified[2:4]
    assert list(store.iter_certified(5, 10**6)) == certified[4:]  # clamped to the head
    assert list(store.iter_certified(4, 3)) == []
    with pytest.raises(ValueError, match="start at 1"):
        list(store.iter_certified(0, 2))


def test_transactions_round_trip(store: BlockStore, certified: Certified) -> None:
    for block, _ in certified:
        for index, t in enumerate(block.txs):
            assert store.tx_location(t.tx_id) == (block.height, index)
            found = store.tx(t.tx_id)
            assert found == t
            assert found is not None
            assert found.raw == t.raw


def test_record_versions_oldest_first_and_latest(store: BlockStore, certified: Certified) -> None:
    versions: dict[str, list[tuple[int, int, bytes]]] = {}
    for block, _ in certified:
        for index, t in enumerate(block.txs):
            versions.setdefault(t.key, []).append((block.height, index, t.tx_id))
    assert len(versions["fiscal/rec-8"]) == 4
    for key, expected in versions.items():
        assert store.record_versions(key, 100) == expected
        assert store.record_versions(key, 1) == expected[:1]
        height, index, tx_id = expected[-1]
        latest = store.latest_record(key)
        assert latest is not None
        assert latest[:2] == (height, index)
        assert latest[2].tx_id == tx_id
        assert store.record_entry(key, height, index) == tx_id
    # A key that is a prefix of another ("claims/rec-1" of "claims/rec-17") sees only its own.
    prefixes = {key[:-1] for key in versions if key[-2].isdigit()}
    assert prefixes
    for key in prefixes:
        assert store.record_versions(key, 100) == versions.get(key, [])
    with pytest.raises(ValueError, match="limit"):
        store.record_versions(next(iter(versions)), 0)


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.block(0),
        lambda s: s.block(BLOCKS + 1),
        lambda s: s.raw_block(-1),
        lambda s: s.raw_block(2**64),
        lambda s: s.certificate(BLOCKS + 1),
        lambda s: s.height_of(b"\x00" * 32),
        lambda s: s.tx_location(b"\x00" * 32),
        lambda s: s.tx(b"\x00" * 32),
        lambda s: s.latest_record("fiscal/never-written"),
        lambda s: s.record_entry("fiscal/rec-1", 10**6, 0),
        lambda s: s.history_node(0, BLOCKS + 1),
        lambda s: s.history_node(64, 0),
        lambda s: s.history_node(0, -1),
    ],
)
def test_reads_of_what_is_not_there_return_none(
    store: BlockStore, read: Callable[[BlockStore], Any]
) -> None:
    assert read(store) is None


def test_record_versions_page_after_a_version(store: BlockStore) -> None:
    every = store.record_versions("fiscal/rec-8", 100)
    pages, after = [], None
    while page := store.record_versions("fiscal/rec-8", 3, after):
        pages.append(page)
        after = page[-1][:2]
    assert [len(p) for p in pages] == [3, 1]
    assert [v for p in pages for v in p] == every
    assert store.record_versions("fiscal/rec-8", 10, (2**63 - 1, 2**32 - 1)) == []
    txs_of = store.record_version_txs("fiscal/rec-8", 10, every[0][:2])
    assert [(h, i, t.tx_id) for h, i, t in txs_of] == every[1:]


def test_record_lookups_ignore_keys_no_tx_can_have(store: BlockStore) -> None:
    # "fiscal/rec-8\0..." would otherwise be a prefix of fiscal/rec-8's own versions.
    key = store.record_versions("fiscal/rec-8", 1)
    assert key
    assert store.record_versions("fiscal/rec-8\x00", 10) == []
    assert store.latest_record("fiscal/rec-8\x00\x00") is None


# --- Refusals --------------------------------------------------------------------------------


def _recertified(net: factory.Network, block: blocks.Block) -> blocks.Certificate:
    return net.certify(block)


def _with_header(block: blocks.Block, **changes: Any) -> blocks.Block:
    header = dataclasses.replace(block.header, **changes)
    return blocks.Block(header, block.txs, header.hash())


def _bad_appends(
    net: factory.Network, certified: Certified, head: blocks.ChainHead
) -> dict[str, tuple[blocks.Block, blocks.Certificate]]:
    """Candidates for height 4 that are wrong in exactly one way, each with a valid
    certificate unless the certificate is the thing that is wrong."""
    block, cert = certified[3]
    assert block.height == head.height + 1
    ts, view = block.header.timestamp_ms, block.header.view

    def certify(b: blocks.Block) -> tuple[blocks.Block, blocks.Certificate]:
        return b, _recertified(net, b)

    skipped = dataclasses.replace(head, height=head.height + 1)
    old_tx = certified[1][0].txs[0]
    misnamed = (dataclasses.replace(block.txs[0], tx_id=b"\x05" * 32), *block.txs[1:])
    # A well-formed vote over the right payload, by a key that is not validator 0's.
    stranger = factory.seeded_key("not-a-validator")
    payload = blocks.commit_payload(net.genesis.chain_id, cert.view, block.height, block.hash)
    forged = crypto.sign(stranger, crypto.Domain.COMMIT, payload)
    forged_votes = ((0, forged), *cert.votes[1:])
    return {
        "wrong height": certify(blocks.make_block(skipped, block.txs, ts, view, 0)),
        "wrong prev hash": certify(_with_header(block, prev_hash=b"\x01" * 32)),
        "wrong history root": certify(_with_header(block, history_root=b"\x02" * 32)),
        "wrong tx root": certify(_with_header(block, tx_root=b"\x03" * 32)),
        "stale block hash": (dataclasses.replace(block, hash=b"\x04" * 32), cert),
        "certificate of another block": (block, certified[2][1]),
        "short certificate": (block, dataclasses.replace(cert, votes=cert.votes[:-1])),
        "forged certificate": (block, dataclasses.replace(cert, votes=forged_votes)),
        "certificate for another view": (block, dataclasses.replace(cert, view=cert.view + 1)),
        "tx committed before": certify(
            blocks.make_block(head, (old_tx, *block.txs[1:]), ts, view, 0)
        ),
        "tx twice": certify(blocks.make_block(head, (block.txs[0],) * 2, ts, view, 0)),
        # Built from fields, not parsed from its bytes: its id is checked against them.
        "tx id not of its bytes": certify(blocks.make_block(head, misnamed, ts, view, 0)),
    }


def test_refused_appends_leave_the_store_unchanged(
    tmp_path: Path, net: factory.Network, certified: Certified
) -> None:
    path = tmp_path / "data"
    with BlockStore.open(path, net.genesis) as store:
        for block, cert in certified[:3]:
            store.append(block, cert)
    before = _dump(path)
    with BlockStore.open(path, net.genesis) as store:
        head = store.head
        for name, (block, cert) in _bad_appends(net, certified, head).items():
            with pytest.raises(InvalidBlock):
                store.append(block, cert)
            assert store.head == head, name
    assert _dump(path) == before
    with BlockStore.open(path, net.genesis) as store:
        store.append(*certified[3])  # and the right block is still welcome
        assert store.height == 4


def test_reopening_gives_the_same_head(
    tmp_path: Path, net: factory.Network, certified: Certified
) -> None:
    path = tmp_path / "data"
    heads = []
    for block, cert in certified:
        with BlockStore.open(path, net.genesis) as store:
            store.append(block, cert)
            heads.append(store.head)
        with BlockStore.open(path, net.genesis) as store:
            assert store.head == heads[-1]
    assert heads[-1].history.root() == merkle.root(
        [net.genesis.hash] + [b.hash for b, _ in certified]
    )


def _tables_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.ldb"))


def test_a_store_written_compressed_reads_back_and_grows_uncompressed(
    tmp_path: Path, net: factory.Network, certified: Certified, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes used to write LevelDB's tables Snappy-compressed; they now write them plain
    (ledger/leveldb.py). Each table block says how it is stored, so an earlier node's store
    reads back whole, takes new blocks, and its tables are rewritten plain when compacted."""
    opened: list[Any] = []
    real = plyvel.DB

    def db(*args: Any, compress: bool, **kwargs: Any) -> Any:
        if compress:
            kwargs["compression"] = "snappy"
        opened.append(real(*args, **kwargs))
        return opened[-1]

    path, half = tmp_path / "data", len(certified) // 2
    monkeypatch.setattr(leveldb.plyvel, "DB", lambda *a, **k: db(*a, compress=True, **k))
    with BlockStore.open(path, net.genesis) as store:
        for block, cert in certified[:half]:
            store.append(block, cert)
        opened[-1].compact_range()  # every entry into tables, compressed
    compressed = _tables_bytes(path)
    monkeypatch.setattr(leveldb.plyvel, "DB", lambda *a, **k: db(*a, compress=False, **k))
    with BlockStore.open(path, net.genesis) as store:
        for block, cert in certified[half:]:
            store.append(block, cert)
        assert [store.block(b.height) for b, _ in certified] == [b for b, _ in certified]
        assert [store.certificate(b.height) for b, _ in certified] == [c for _, c in certified]
        opened[-1].compact_range()  # the tables rewritten, plain
        halves = [store.block(b.height) for b, _ in certified[:half]]
    assert halves == [b for b, _ in certified[:half]]
    assert _tables_bytes(path) > compressed * len(certified) / half  # plain, not compressed


# --- Foreign, locked, damaged stores ---------------------------------------------------------


def test_a_store_of_another_chain_is_refused(store: BlockStore, tmp_path: Path) -> None:
    store.close()
    other = factory.network(chain_id="othercity")
    with pytest.raises(StoreError, match=r"belongs to chain 'testcity'.*not to chain 'othercity'"):
        BlockStore.open(tmp_path / "data", other.genesis)


def test_a_store_of_an_earlier_format_is_refused_untouched(
    store: BlockStore, tmp_path: Path
) -> None:
    genesis = store.genesis
    store.close()
    db = plyvel.DB(str(tmp_path / "data"))
    db.put(leveldb.META_KEY, encode([leveldb.FORMAT_VERSION - 1, genesis.chain_id, genesis.hash]))
    before = list(db.iterator())
    db.close()
    earlier = leveldb.FORMAT_VERSION - 1
    with pytest.raises(StoreError, match=rf"this chain in store format {earlier}; .* reads format"):
        BlockStore.open(tmp_path / "data", genesis)
    db = plyvel.DB(str(tmp_path / "data"))
    assert list(db.iterator()) == before
    db.close()


def test_a_locked_store_is_a_store_error(store: BlockStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="already running"):
        BlockStore.open(tmp_path / "data", store.genesis)


def test_a_missing_or_foreign_directory_is_refused_for_audit(
    tmp_path: Path, net: factory.Network
) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        BlockStore.open_for_audit(tmp_path / "nothing", net.genesis)
    db = plyvel.DB(str(tmp_path / "other"), create_if_missing=True)
    db.put(b"some", b"thing")
    db.close()
    with pytest.raises(StoreError, match="not a CityLedger block store"):
        BlockStore.open(tmp_path / "other", net.genesis)


def test_an_audit_store_refuses_to_append(store: BlockStore, certified: Certified) -> None:
    path, genesis = store.path, store.genesis
    store.close()
    with BlockStore.open_for_audit(path, genesis) as audit:
        assert audit.head_pointer() == (BLOCKS, certified[-1][0].hash)
        assert audit.block(2) == certified[1][0]
        with pytest.raises(StoreError, match="audit"):
            audit.append(*certified[0])


def _damage(path: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(path))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


def test_damaged_reads_are_store_errors(store: BlockStore, certified: Certified) -> None:
    path, genesis = store.path, store.genesis
    store.close()
    block = certified[1][0]
    _damage(path, b"B" + (2).to_bytes(8, "big"), block.encode()[:-3])
    _damage(path, b"C" + (2).to_bytes(8, "big"), b"\xc1")
    _damage(path, b"H" + block.hash, b"\x00")
    _damage(path, b"T" + certified[2][0].txs[0].tx_id, (1).to_bytes(8, "big") + bytes(4))
    other = certified[3][0].txs[0]  # its tx bytes entry holds another tx's bytes
    _damage(path, b"X" + other.tx_id, (4).to_bytes(8, "big") + bytes(4) + block.txs[0].raw)
    with BlockStore.open(path, genesis) as damaged:  # the head is fine, so it opens
        for read in (
            lambda: damaged.block(2),
            lambda: damaged.certificate(2),
            lambda: damaged.height_of(block.hash),
            lambda: damaged.tx(certified[2][0].txs[0].tx_id),  # index points at a wrong tx
            lambda: damaged.tx(other.tx_id),
            lambda: damaged.record_version_txs(other.key, 10),
            lambda: list(damaged.iter_certified(1, 3)),
        ):
            with pytest.raises(StoreError):
                read()


def test_damaged_history_nodes_of_the_head_fail_opening(store: BlockStore) -> None:
    path, genesis = store.path, store.genesis
    store.close()
    # Size 6 (the head block's history root) has peaks (2, 0) and (1, 2); block 6 completes
    # leaf (0, 6) and nothing above it. Each is read when opening.
    for level, index in [(2, 0), (1, 2), (0, 6)]:
        key = b"N" + bytes([level]) + index.to_bytes(8, "big")
        good = dict(_dump(path))[key]
        for value in (bytes(32), None):
            _damage(path, key, value)
            with pytest.raises(StoreError, match=r"head block 6 is damaged.*history node"):
                BlockStore.open(path, genesis)
        _damage(path, key, good)
    BlockStore.open(path, genesis).close()


# --- History proofs --------------------------------------------------------------------------


def test_history_proofs_from_stored_nodes(
    store: BlockStore, net: factory.Network, certified: Certified
) -> None:
    leaves = [net.genesis.hash] + [b.hash for b, _ in certified]
    # The root over leaves 0..h-1 is block h's header history root; over all, the head's.
    roots = [b.header.history_root for b, _ in certified] + [store.head.history.root()]
    for size in range(1, len(leaves) + 1):
        root = roots[size - 1]
        assert root == merkle.root(leaves[:size])
        for index in range(size):
            proof = store.history_inclusion_proof(size, index)
            assert proof == merkle.inclusion_proof(leaves[:size], index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
        for old in range(1, size + 1):
            proof = store.history_consistency_proof(old, size)
            assert proof == merkle.consistency_proof(leaves[:size], old)
            assert merkle.verify_consistency(old, size, roots[old - 1], root, proof)
    for bad in (0, len(leaves) + 1):
        with pytest.raises(ValueError, match="sizes"):
            store.history_inclusion_proof(bad, 0)
        with pytest.raises(ValueError, match="sizes"):
            store.history_consistency_proof(1, bad)


def test_history_nodes_are_the_frontier_nodes(store: BlockStore, certified: Certified) -> None:
    frontier = merkle.Frontier.empty()
    for leaf in [store.genesis.hash] + [b.hash for b, _ in certified]:
        frontier, nodes = frontier.append_with_nodes(leaf)
        for node in nodes:
            assert store.history_node(node.level, node.index) == node.digest
    assert frontier == store.head.history


# --- The cost of opening ---------------------------------------------------------------------


class _ProxyDB:
    """Stands in for plyvel.DB (a C type that cannot be subclassed): counts reads, and can
    skip fsync, which only the crash test is about, to build a long chain quickly."""

    gets = 0
    scans = 0
    sync = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._db = _REAL_DB(*args, **kwargs)

    def get(self, key: bytes, *args: Any) -> Any:
        _ProxyDB.gets += 1
        return self._db.get(key, *args)

    def iterator(self, *args: Any, **kwargs: Any) -> Any:
        _ProxyDB.scans += 1
        return self._db.iterator(*args, **kwargs)

    def write_batch(self, *, sync: bool = False) -> Any:
        return self._db.write_batch(sync=sync and _ProxyDB.sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


_REAL_DB = plyvel.DB


def _reads_to_open(
    path: Path, net: factory.Network, blocks_count: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int]:
    with monkeypatch.context() as patch:
        patch.setattr(plyvel, "DB", _ProxyDB)
        patch.setattr(_ProxyDB, "sync", False)
        with BlockStore.open(path, net.genesis) as store:
            for block, cert in factory.chain(net, blocks_count, 1):
                store.append(block, cert)
        _ProxyDB.gets = _ProxyDB.scans = 0
        with BlockStore.open(path, net.genesis) as store:
            assert store.height == blocks_count
        return _ProxyDB.gets, _ProxyDB.scans


def test_opening_reads_a_bounded_number_of_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _reads_to_open(tmp_path / "small", factory.network(), 10, monkeypatch)
    large = _reads_to_open(tmp_path / "large", factory.network(), 1000, monkeypatch)
    assert small[1] == large[1] == 0  # no scans at all
    # Fixed reads (meta, head pointer, head block and certificate), the history peaks under
    # the head block (one per set bit of its height) and the nodes the head completed (one per
    # trailing set bit, plus its leaf): O(log n), never one per block.
    assert small[0] <= 4 + 3 * (10).bit_length()
    assert large[0] <= 4 + 3 * (1000).bit_length()
    assert large[0] - small[0] <= 3 * ((1000).bit_length() - (10).bit_length())
