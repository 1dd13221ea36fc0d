"""Reads of the block store's tx and record indexes (`T`, `X`, `R`; ledger/storelayout.py).

Split from `ledger.store`, which writes these entries in each block's batch; this module only
reads them, through the store's `Reader`, and pair-checks what it reads: a tx read from the `X`
index must sit at the location another index named and hash to its own id. A damaged entry is
a `StoreError`, never another exception. Reads of one tx or of a record's versions never
decode a block.
"""

import contextlib
from typing import Final

from ledger import tx as txs
from ledger.block import HEIGHT_MAX
from ledger.errors import InvalidTransaction, StoreError
from ledger.leveldb import Reader, record_keys
from ledger.primitives import DIGEST_BYTES
from ledger.storelayout import (
    LOCATION_BYTES,
    RECORD,
    TX,
    TX_BYTES,
    location_bytes,
    lookup_prefix,
    unpack_location,
)

RECORD_VERSIONS_MAX: Final = 10_000  # one call's answer; callers page with `after`


class Records:
    """The committed txs by id, and each record's versions in order."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def has_tx(self, tx_id: bytes) -> bool:
        """Whether the tx is committed here (`tx_location` without decoding the entry)."""
        return self._reader.get(TX + tx_id) is not None

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        key = TX + tx_id
        raw = self._reader.get(key)
        if raw is None:
            return None
        return unpack_location(self._reader.checked_length(key, raw, LOCATION_BYTES))

    def tx(self, tx_id: bytes) -> txs.Transaction | None:
        location = self.tx_location(tx_id)
        return None if location is None else self.tx_at(*location, tx_id)

    def tx_at(self, height: int, index: int, tx_id: bytes) -> txs.Transaction:
        """The committed tx `tx_id` at (height, index), from its `X` entry: pair-checked
        against the location the caller read from another index and against its own id."""
        key = TX_BYTES + tx_id
        value = self._reader.get(key)
        found = None
        if value is not None and value[:LOCATION_BYTES] == location_bytes(height, index):
            with contextlib.suppress(InvalidTransaction):
                found = txs.decode_tx(value[LOCATION_BYTES:])
        if found is None or found.tx_id != tx_id:
            raise StoreError(f"{self._reader.path}: the entry {key!r} is damaged")
        return found

    def indexed_tx(self, tx_id: bytes) -> tuple[int, int, bytes] | None:
        """The `X` entry of `tx_id` as stored, unchecked: (height, index, tx bytes); for
        verifiers. None if there is none."""
        value = self._reader.get(TX_BYTES + tx_id)
        if value is None or len(value) < LOCATION_BYTES:
            return None if value is None else (-1, -1, value)
        return (*unpack_location(value[:LOCATION_BYTES]), value[LOCATION_BYTES:])

    def versions(
        self, key: str, limit: int, after: tuple[int, int] | None = None
    ) -> list[tuple[int, int, bytes]]:
        """(height, index, tx id) of the first `limit` versions of record `key` that come after
        version `after` (a (height, index) from an earlier page; None: from the first), oldest
        first. One index scan: no block is read."""
        if not 1 <= limit <= RECORD_VERSIONS_MAX:
            raise ValueError(f"limit must be in [1, {RECORD_VERSIONS_MAX}]")
        prefix = lookup_prefix(key)
        if prefix is None:
            return []
        start = prefix if after is None else prefix + location_bytes(*after)
        stop = prefix[:-1] + bytes([prefix[-1] + 1])  # just past every key with this prefix
        items = self._reader.scan(start, stop, limit, include_start=after is None)
        return [self._entry(prefix, k, v) for k, v in items]

    def version_txs(
        self, key: str, limit: int, after: tuple[int, int] | None = None
    ) -> list[tuple[int, int, txs.Transaction]]:
        """`versions` with each version's tx (from the `X` index: no block decoded)."""
        return [
            (height, index, self.tx_at(height, index, tx_id))
            for height, index, tx_id in self.versions(key, limit, after)
        ]

    def keys(self, low: str, high: str | None, limit: int) -> list[str]:
        """Up to `limit` record keys k with low <= k (< high), in order: one seek per record."""
        return record_keys(self._reader.db, RECORD, low, high, limit, self._reader.path)

    def latest(self, key: str) -> tuple[int, int, txs.Transaction] | None:
        prefix = lookup_prefix(key)
        if prefix is None:
            return None
        for k, v in self._reader.items(prefix, reverse=True, limit=1):
            height, index, tx_id = self._entry(prefix, k, v)
            return height, index, self.tx_at(height, index, tx_id)
        return None

    def entry(self, key: str, height: int, index: int) -> bytes | None:
        """The tx id the record index holds for version (height, index) of `key`, if any."""
        prefix = lookup_prefix(key)
        if prefix is None or not (0 <= height <= HEIGHT_MAX and 0 <= index < 2**32):
            return None
        entry = prefix + location_bytes(height, index)
        raw = self._reader.get(entry)
        return None if raw is None else self._reader.checked_length(entry, raw, DIGEST_BYTES)

    def _entry(self, prefix: bytes, key: bytes, value: bytes) -> tuple[int, int, bytes]:
        height, index = unpack_location(
            self._reader.checked_length(key, key[len(prefix) :], LOCATION_BYTES)
        )
        return height, index, self._reader.checked_length(key, value, DIGEST_BYTES)
