"""The block store's key layout (ledger/store.py documents it) and the steps of a store write.

Pure: byte layouts and frozen values, no LevelDB.
"""

from dataclasses import dataclass
from typing import Final

from ledger.block import Block, Certificate
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
    links, roots, hashes and certificate always are."""

    block: Block
    certificate: Certificate
    txs_checked: bool = False


Step = StateWrite | BlockWrite
"""One step of `BlockStore.write`: a replica state write, or a certified block to append."""
