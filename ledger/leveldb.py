"""Opening the block store's LevelDB: its tuning, and the meta record that names its chain;
the ordered scan of record keys (`record_keys`), and the checked reads the store's parts share
(`Reader`).

Split from `ledger.store` (which owns every key and value); like it, it lets no plyvel error
escape: a store that cannot be opened, or belongs to another chain, is a `StoreError`.
"""

from pathlib import Path
from typing import Any, Final

import plyvel

from ledger.encoding import decode, encode
from ledger.errors import LedgerError, StoreError
from ledger.genesis import Genesis

FORMAT_VERSION: Final = (
    4  # 2: the X index of tx bytes; 3: outcomes and rule state; 4: risk state in chunks
)
META_BYTES_MAX: Final = 256
META_KEY: Final = b"meta"
HEAD_KEY: Final = b"head"
_HEIGHT_BYTES: Final = 8
# Table files LevelDB keeps open (its default is 1,000): each is a descriptor, and the node's
# descriptors are counted (node/limits.py keeps a reserve for the store out of its limit).
FILES_OPEN_MAX: Final = 128

# LevelDB tuning (none of it changes what is stored or how it reads back):
# - a Bloom filter per table: most lookups are for tx ids that are not committed (every
#   admission and block check asks), and without a filter each miss reads an index block of
#   every level; with one, a miss costs a hash and a few bit tests;
# - a larger memtable: fewer, larger compactions under a steady write load (at most two
#   memtables in memory: 32 MiB); the block cache keeps LevelDB's default size (a node reads
#   few data blocks: lookups of uncommitted ids stop at the filters);
# - no compression: LevelDB compresses every table block it writes with Snappy, and every
#   compaction decompresses and compresses it again. On the fiscal workload LevelDB's threads
#   spent 79 to 95 µs of CPU per tx per node with it, 21 to 25 without (docs/benchmarks.md),
#   for 40% fewer bytes on disk (426 rather than 711 per plain tx per node). A ledger node is
#   short of CPU, not disk. Each table block records whether it is compressed, so a store
#   written before, with Snappy, reads back as it is and is rewritten plain by compactions.
_BLOOM_FILTER_BITS: Final = 10
_WRITE_BUFFER_BYTES: Final = 16 * 1024 * 1024
BLOCK_CACHE_BYTES: Final = 8 * 1024 * 1024
# An audit reads every index entry once, in no useful order: with a cache this size each data
# block of the indexes is read and decompressed about once rather than once per entry in it
# (the cache fills only as far as the store is big).
AUDIT_CACHE_BYTES: Final = 256 * 1024 * 1024


def open_db(path: Path, *, create: bool, cache_bytes: int = BLOCK_CACHE_BYTES) -> Any:
    try:
        return plyvel.DB(
            str(path), create_if_missing=create, bloom_filter_bits=_BLOOM_FILTER_BITS,
            write_buffer_size=_WRITE_BUFFER_BYTES, lru_cache_size=cache_bytes,
            max_open_files=FILES_OPEN_MAX, compression=None,
        )  # fmt: skip
    except plyvel.IOError as exc:
        raise StoreError(
            f"cannot open block store {path}: {exc} (is a node already running on it?)"
        ) from None
    except plyvel.Error as exc:
        raise StoreError(f"cannot open block store {path}: {exc}") from None


def _meta_value(genesis: Genesis) -> bytes:
    return encode([FORMAT_VERSION, genesis.chain_id, genesis.hash])


def init_or_check_meta(db: Any, path: Path, genesis: Genesis, *, create: bool = True) -> None:
    """Write the meta and an empty head to a new store, or check an existing store's meta."""
    try:
        raw = db.get(META_KEY)
        if raw is None:
            with db.iterator(include_value=False) as it:
                is_empty = next(it, None) is None
            if not (create and is_empty):
                raise StoreError(
                    f"{path} is not a CityLedger block store, or a damaged one (no meta record)"
                )
            batch = db.write_batch(sync=True)
            batch.put(META_KEY, _meta_value(genesis))
            batch.put(HEAD_KEY, (0).to_bytes(_HEIGHT_BYTES, "big") + genesis.hash)
            batch.write()
            return
    except plyvel.Error as exc:
        raise StoreError(f"cannot read block store {path}: {exc}") from None
    if raw == _meta_value(genesis):
        return
    try:
        version, chain_id, genesis_hash = decode(raw, META_BYTES_MAX)
        owner = f"chain {chain_id!r} (genesis {bytes(genesis_hash).hex()}, format {version})"
    except (LedgerError, ValueError, TypeError):
        raise StoreError(f"{path}: the store's meta record is damaged") from None
    if [chain_id, bytes(genesis_hash)] == [genesis.chain_id, genesis.hash]:
        raise StoreError(
            f"{path} holds this chain in store format {version}; this version of CityLedger "
            f"reads format {FORMAT_VERSION}: migrate it through a backup (docs/operations.md, "
            "store format versions)"
        )
    raise StoreError(
        f"{path} belongs to {owner}, not to chain {genesis.chain_id!r} "
        f"(genesis {genesis.hash.hex()}, format {FORMAT_VERSION})"
    )


# --- Record keys in order --------------------------------------------------------------------
# The record index holds one entry per version, `b"R" key b"\x00" height index`. Listing the
# records under a prefix reads the first entry of a record, then seeks just past the record's
# last possible entry (`key b"\x01"`), so a page of n records costs n seeks however many
# versions each has.

_SEPARATOR = b"\x00"  # between a record key and a version's location (keys have no NUL)
_PAST_VERSIONS = b"\x01"  # after the separator: just past every version of a key


def record_keys(
    db: Any, prefix: bytes, low: str, high: str | None, limit: int, path: Path
) -> list[str]:
    """Up to `limit` keys k of records with low <= k (and k < high unless `high` is None)."""
    start = prefix + low.encode()
    stop = prefix[:-1] + bytes([prefix[-1] + 1]) if high is None else prefix + high.encode()
    keys: list[str] = []
    if limit < 1 or start >= stop:
        return keys
    try:
        with db.iterator(start=start, stop=stop, include_value=False) as it:
            for entry in it:
                end = entry.find(_SEPARATOR, len(prefix))
                if end < 0:
                    raise StoreError(f"{path}: the record entry {entry!r} is damaged")
                keys.append(entry[len(prefix) : end].decode())
                if len(keys) >= limit:
                    break
                it.seek(entry[:end] + _PAST_VERSIONS)
    except (plyvel.Error, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: scanning the record index failed: {exc}") from None
    return keys


# --- Reads ------------------------------------------------------------------------------------


class Reader:
    """The reads the store's parts share (ledger/store.py, ledger/records.py,
    ledger/rulestore.py) on one open LevelDB: every plyvel error becomes a `StoreError` that
    names the store, and fixed-length entries are checked for their length."""

    def __init__(self, db: Any, path: Path) -> None:
        self.db = db
        self.path = path

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self.db.get(key)
        except plyvel.Error as exc:
            raise StoreError(f"{self.path}: read failed: {exc}") from None
        return value

    def items(self, prefix: bytes, *, reverse: bool, limit: int) -> list[tuple[bytes, bytes]]:
        try:
            with self.db.iterator(prefix=prefix, reverse=reverse) as it:
                return [item for item, _ in zip(it, range(limit), strict=False)]
        except plyvel.Error as exc:
            raise StoreError(f"{self.path}: scan failed: {exc}") from None

    def keys(self, prefix: bytes, *, reverse: bool, limit: int) -> list[bytes]:
        return [k for k, _ in self.items(prefix, reverse=reverse, limit=limit)]

    def scan(
        self, start: bytes, stop: bytes, limit: int, *, include_start: bool = True
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` entries with start <= key < stop (key > start without
        `include_start`), in key order."""
        try:
            with self.db.iterator(start=start, stop=stop, include_start=include_start) as it:
                return [item for item, _ in zip(it, range(limit), strict=False)]
        except plyvel.Error as exc:
            raise StoreError(f"{self.path}: scan failed: {exc}") from None

    def checked_length(self, key: bytes, value: bytes, length: int) -> bytes:
        """`value` if it has the fixed length of its kind of entry (the message is only built
        on failure: these checks run for every tx a verifier reads)."""
        if len(value) != length:
            raise StoreError(f"{self.path}: the entry {key!r} is damaged (length {len(value)})")
        return value
