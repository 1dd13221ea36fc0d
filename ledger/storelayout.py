"""The block store's key layout and the steps of a store write (ledger/store.py writes them).

Key layout (heights are 8-byte big-endian, tx positions 4-byte big-endian, so LevelDB's byte
order is height order; every class of key has its own one-byte prefix or a fixed name):

    b"meta"                              -> encode([FORMAT_VERSION, chain_id, genesis_hash])
    b"head"                              -> height(8) || block_hash(32); (0, genesis hash) if empty
    b"B" height(8)                       -> the exact bytes of `Block.encode()`
    b"C" height(8)                       -> the exact bytes of `Certificate.encode()`
    b"H" block_hash(32)                  -> height(8)
    b"T" tx_id(32)                       -> height(8) || index(4)
    b"X" tx_id(32)                       -> height(8) || index(4) || the tx's canonical bytes
    b"R" record_key b"\\x00" height index -> tx_id(32)
    b"N" level(1) index(8)               -> hash(32), a node of the history tree
    b"P" name                            -> the consensus replica's own state (not chain data)
    b"S" state_key                       -> encode(value): the rule state (ledger/kinds)
    b"O" tx_id(32)                       -> the reason code of a refused tx (accepted: none)
    b"A" height(8) index(2)              -> encode([kind, evidence tx ids, detail]): an alert

Record keys never contain NUL (ledger.tx allows `A-Za-z0-9._:-/` only), so `b"R" key b"\\x00"`
is a prefix that matches exactly one record's versions, in height/index order; the latest
version is the first entry of a reverse scan. `N` holds every perfect-subtree node that
`merkle.Frontier.append_with_nodes` reports: leaf i is block i's hash (leaf 0 the genesis hash,
written with block 1), so any history proof for any size up to the head is O(log n) reads.

Reads of one tx or of a record's versions never decode a block: `X` holds each committed tx's
own bytes (a second copy of them, the price of history and tx lookups that cost a few point
reads per version, whatever the size of the blocks they are in; format 2 added it).

Pure: byte layouts and frozen values, no LevelDB.
"""

from dataclasses import dataclass, field
from typing import Final

from ledger.block import Block, Certificate
from ledger.kinds.base import Writes
from ledger.leveldb import HEAD_KEY

HEAD: Final = HEAD_KEY
BLOCK: Final = b"B"
CERT: Final = b"C"
HASH: Final = b"H"
TX: Final = b"T"
TX_BYTES: Final = b"X"
RECORD: Final = b"R"
NODE: Final = b"N"
STATE: Final = b"S"
OUTCOME: Final = b"O"
RECORD_END: Final = b"\x00"
HEIGHT_BYTES: Final = 8
INDEX_BYTES: Final = 4
LOCATION_BYTES: Final = HEIGHT_BYTES + INDEX_BYTES


def height_bytes(height: int) -> bytes:
    return height.to_bytes(HEIGHT_BYTES, "big")


def location_bytes(height: int, index: int) -> bytes:
    return height.to_bytes(HEIGHT_BYTES, "big") + index.to_bytes(INDEX_BYTES, "big")


def record_prefix(key: str) -> bytes:
    return RECORD + key.encode() + RECORD_END


def lookup_prefix(key: str) -> bytes | None:
    """The prefix of a record key asked about from outside; None for keys no tx can have
    (a NUL inside would make the prefix match another record's versions)."""
    return None if "\x00" in key else record_prefix(key)


def node_key(level: int, index: int) -> bytes:
    return NODE + bytes([level]) + index.to_bytes(8, "big")


def unpack_location(value: bytes) -> tuple[int, int]:
    height, index = value[:HEIGHT_BYTES], value[HEIGHT_BYTES:]
    return int.from_bytes(height, "big"), int.from_bytes(index, "big")


@dataclass(frozen=True)
class StateWrite:
    """Replica state entries to delete, then put (keys without the store's b"P" prefix)."""

    puts: tuple[tuple[bytes, bytes], ...]
    deletes: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class BlockWrite:
    """A certified block to append. `txs_checked`: the caller (consensus) ran `check_block` on
    this very block against the same parent, so its txs' rules are not checked again; its
    links, roots, hashes and certificate always are. `writes`: with `txs_checked`, the rule
    state that check's execution wrote (the state after the parent is the same, so the store
    takes them instead of executing the block a second time); None: the store executes it."""

    block: Block
    certificate: Certificate
    txs_checked: bool = False
    writes: Writes | None = field(default=None, compare=False)


Step = StateWrite | BlockWrite
"""One step of `BlockStore.write`: a replica state write, or a certified block to append."""


def after_prefix(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (a scan's exclusive stop)."""
    trimmed = prefix.rstrip(b"\xff")
    assert trimmed, "no prefix of only 0xff bytes is used"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
