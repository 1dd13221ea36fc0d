"""The replica's journal: everything it persists, in one key layout, and its restore.

What a replica promised (the view it is in, the blocks it accepted and prepared) must survive a
crash, or it could vote otherwise after a restart. This module owns the keys of those entries:
every `Persist` action the replica emits is built here, and `restore` is their only reader. It
never decides anything: the replica asks for the write, and carries it out by emitting it.

Layout (values are canonical encodings):
- `view` -> `[view, in_view_change]`
- `a/` + height (8 bytes, big-endian) -> `[view, block_hash]`: the block accepted there
- `p/` + height -> `[view, block_hash, [[sender, signature], ...]]`: its prepared proof
- `b/` + block hash -> the block's bytes, for every accepted block still referenced
- `stable` -> `[height, block_hash, [[sender, signature], ...]]`: the last stable checkpoint and
  the q Checkpoint votes that prove it (served to anyone after a restart, too)
Entries at or below a stable checkpoint are void and deleted in one batch (`collect`), the
batch that records the new stable checkpoint.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ledger.block import Block, ChainHead, decode_block
from ledger.encoding import decode, encode
from ledger.primitives import DIGEST_BYTES

from consensus import messages as m
from consensus.checkpoints import StableProof
from consensus.events import Persist

STATE_BYTES_MAX: Final = 64 * 1024 * 1024
HEIGHT_BYTES: Final = 8

KEY_VIEW: Final = b"view"
KEY_STABLE: Final = b"stable"
PREFIX_ACCEPTED: Final = b"a/"
PREFIX_PREPARED: Final = b"p/"
PREFIX_BLOCK: Final = b"b/"


def height_key(prefix: bytes, height: int) -> bytes:
    assert prefix in (PREFIX_ACCEPTED, PREFIX_PREPARED)
    return prefix + height.to_bytes(HEIGHT_BYTES, "big")


def parse_height_key(key: bytes) -> tuple[bytes, int] | None:
    """(prefix, height) of an accepted or prepared entry's key; None for any other key."""
    prefix, rest = key[:2], key[2:]
    if prefix not in (PREFIX_ACCEPTED, PREFIX_PREPARED) or len(rest) != HEIGHT_BYTES:
        return None
    return prefix, int.from_bytes(rest, "big")


@dataclass(frozen=True)
class Restored:
    """What a replica promised before its restart, above its committed head."""

    view: int
    in_view_change: bool
    prepared: dict[int, m.PreparedProof]
    accepted: tuple[Block, ...]  # heads+1, head+2, ...: accepted in `view`, each on the last
    blocks: tuple[Block, ...]  # every block accepted above the head, in any view
    stable: StableProof | None  # the last stable checkpoint, at or below the head


class Journal:
    """Builds the replica's writes and remembers which accepted blocks are on disk."""

    def __init__(self, committed_height: int, window: int) -> None:
        self._blocks: dict[bytes, int] = {}  # block hash -> height, of `b/` entries on disk
        self._floor = committed_height + 1 - window  # lowest height that may have entries

    def view(self, view: int, *, in_view_change: bool) -> Persist:
        return Persist(puts=((KEY_VIEW, encode([view, int(in_view_change)])),))

    def accepted(self, view: int, block: Block) -> Persist:
        self._blocks[block.hash] = block.height
        return Persist(
            puts=(
                (PREFIX_BLOCK + block.hash, block.encode()),
                (height_key(PREFIX_ACCEPTED, block.height), encode([view, block.hash])),
            )
        )

    def prepared(self, proof: m.PreparedProof) -> Persist:
        assert proof.block_hash in self._blocks, "a prepared block was accepted first"
        votes = [list(v) for v in proof.prepares]
        value = encode([proof.view, proof.block_hash, votes])
        return Persist(puts=((height_key(PREFIX_PREPARED, proof.height), value),))

    def collect(self, proof: StableProof) -> Persist:
        """Record a new stable checkpoint and delete every entry at or below it (void
        promises), in one batch."""
        stable_height = proof.height
        deletes = [
            height_key(p, h)
            for h in range(max(1, self._floor), stable_height + 1)
            for p in (PREFIX_ACCEPTED, PREFIX_PREPARED)
        ]
        done = [d for d, h in self._blocks.items() if h <= stable_height]
        deletes += [PREFIX_BLOCK + d for d in done]
        for digest in done:
            del self._blocks[digest]
        self._floor = stable_height + 1
        votes = [list(v) for v in proof.votes]
        stable = encode([proof.height, proof.block_hash, votes])
        return Persist(puts=((KEY_STABLE, stable),), deletes=tuple(deletes))

    def size(self) -> int:
        return len(self._blocks)

    def restore(self, persisted: Mapping[bytes, bytes], head: ChainHead, window: int) -> Restored:
        """Read back every entry of earlier `Persist` actions (all of them, in any order)."""
        view, in_view_change = 0, False
        if KEY_VIEW in persisted:
            view, flag = decode(persisted[KEY_VIEW], STATE_BYTES_MAX)
            in_view_change = bool(flag)
        blocks: dict[bytes, Block] = {}
        for key, raw in persisted.items():
            if key.startswith(PREFIX_BLOCK) and len(key) == len(PREFIX_BLOCK) + DIGEST_BYTES:
                block = decode_block(raw)
                blocks[block.hash] = block
                self._blocks[block.hash] = block.height
        prepared: dict[int, m.PreparedProof] = {}
        accepted: dict[int, tuple[int, bytes]] = {}
        for key, value in persisted.items():
            parsed = parse_height_key(key)
            if parsed is None or parsed[1] <= head.height:
                continue
            prefix, height = parsed
            if prefix == PREFIX_PREPARED:
                p_view, digest, sigs = decode(value, STATE_BYTES_MAX)
                votes = tuple((s, sig) for s, sig in sigs)
                prepared[height] = m.PreparedProof(p_view, height, digest, votes)
            else:
                a_view, digest = decode(value, STATE_BYTES_MAX)
                accepted[height] = (a_view, digest)
        chain: list[Block] = []
        prev_hash = head.hash
        for height in range(head.height + 1, head.height + window + 1):
            if in_view_change or height not in accepted:
                break
            a_view, digest = accepted[height]
            block = blocks[digest]
            if a_view != view or block.header.prev_hash != prev_hash:
                break
            chain.append(block)
            prev_hash = block.hash
        top = head.height + window
        above = tuple(b for b in blocks.values() if head.height < b.height <= top)
        return Restored(
            view, in_view_change, prepared, tuple(chain), above, _stable(persisted, head)
        )


def _stable(persisted: Mapping[bytes, bytes], head: ChainHead) -> StableProof | None:
    """The persisted stable checkpoint, if one is at or below the head (a crash between its
    write and the block's could leave it above: it is then forgotten, and proven again)."""
    if KEY_STABLE not in persisted:
        return None
    height, digest, votes = decode(persisted[KEY_STABLE], STATE_BYTES_MAX)
    if height > head.height:
        return None
    return StableProof(height, digest, tuple((s, sig) for s, sig in votes))
