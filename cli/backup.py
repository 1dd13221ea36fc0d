"""`cityledger backup | restore`: a running node's chain to a directory, and back into a store.

A backup is a consistent snapshot because the chain is append-only: the node's certified head
at the start (`GET /v1/checkpoint`, verified against the genesis) fixes a height H, and blocks
1..H never change. They are fetched as their exact bytes (`GET /v1/chain`, with the caller's
identity: validators and auditors only), each verified against the genesis as it arrives
(docs/protocol.md section 12), and the last one must be the head the checkpoint certified.
Only then is the directory renamed into place: a backup that exists is a verified one.

The directory holds `backup.json` (the manifest), `genesis.toml`, and `blocks.msgpack`: the
certified blocks as a stream of msgpack arrays `[block bytes, certificate bytes]`, heights 1..H
in order. It depends on the protocol's bytes only, not on the store's format, so `restore`
writes a store of the running version's format whatever version took the backup (the
migration path of docs/operations.md). `restore` verifies every block again, from the genesis,
before the new store is renamed into place.
"""

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import click
import msgpack

from cli.audit import TxLocations
from cli.client import Client, Refused
from cli.errors import Failed
from cli.options import genesis_option, identity_options, json_option, node_option, signer_of
from cli.output import Progress, echo_json, fields
from cli.records import refused
from ledger import genesis as genesis_mod
from ledger import proofs
from ledger.block import CERTIFICATE_BYTES_MAX
from ledger.errors import InvalidGenesis, LedgerError
from ledger.genesis import Genesis
from ledger.leveldb import FORMAT_VERSION
from ledger.primitives import BLOCK_BYTES_MAX
from ledger.store import BlockStore
from ledger.storelayout import BlockWrite
from ledger.verify import ChainVerifier
from node.config import DATA_DIR_MODE

FORMAT: Final = "cityledger-backup/1"
MANIFEST: Final = "backup.json"
BLOCKS: Final = "blocks.msgpack"
GENESIS: Final = "genesis.toml"
MANIFEST_BYTES_MAX: Final = 64 * 1024
PAIR_BYTES_MAX: Final = BLOCK_BYTES_MAX + CERTIFICATE_BYTES_MAX + 64  # one [block, cert] item
RESTORE_BATCH_BLOCKS: Final = 64  # blocks per synced write while restoring
READ_CHUNK_BYTES: Final = 1024 * 1024
MANIFEST_FIELDS: Final = ("format", "chain_id", "genesis_hash", "height", "head_hash",
                          "blocks_sha256")  # fmt: skip


# --- backup ----------------------------------------------------------------------------------


def _fresh(path: Path, what: str) -> None:
    """`path` must be free: missing, or an empty directory (which is then removed)."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    elif path.exists():
        raise Failed(f"{path} exists and is not empty: {what} writes a new directory")


def _scratch(out: Path) -> Path:
    scratch = out.with_name(f".{out.name}.partial")
    if scratch.exists():  # an interrupted earlier run: never a backup, safe to drop
        shutil.rmtree(scratch)
    scratch.mkdir(mode=DATA_DIR_MODE, parents=True)
    return scratch


def _head(node: Client, genesis: Genesis) -> tuple[int, bytes]:
    """The height and hash of the node's certified head, its certificate checked."""
    try:
        doc = node.get("/v1/checkpoint", binary=True)
    except Refused as exc:
        if exc.status == 404:  # no block yet: an empty chain is a valid backup
            return 0, genesis.hash
        raise refused(exc, "backup") from None
    try:
        certified = proofs.verify_checkpoint(doc, genesis)
    except proofs.InvalidProof as exc:
        raise Failed(f"the node's certified head does not verify: {exc}") from None
    return certified.header.height, certified.block_hash


def _fetch(node: Client, genesis: Genesis, head: int, out: IO[bytes], progress: Progress) -> str:
    """Blocks 1..head into `out`, each verified; the SHA-256 of what was written."""
    locations = TxLocations()
    verifier = ChainVerifier(genesis, locations)
    digest = hashlib.sha256()
    height = 1
    while height <= head:
        try:
            _, pairs = node.chain(height, head)
        except Refused as exc:
            raise refused(exc, "backup") from None
        if not pairs:
            raise Failed(f"the node served no block at height {height} below its head {head}")
        for block_bytes, cert_bytes in pairs:
            try:
                verified = verifier.feed(block_bytes, cert_bytes)
            except LedgerError as exc:
                raise Failed(f"block {height} from the node does not verify: {exc}") from None
            for index, tx in enumerate(verified.block.txs):
                locations.add(tx.tx_id, height, index)
            item = msgpack.packb([block_bytes, cert_bytes], use_bin_type=True)
            out.write(item)
            digest.update(item)
            height += 1
        progress(height - 1, head)
    return digest.hexdigest()


def take_backup(node: Client, genesis: Genesis, out: Path, progress: Progress) -> dict[str, Any]:
    """Snapshot the node's chain into `out` (a new directory); the manifest written."""
    _fresh(out, "backup")
    scratch = _scratch(out)
    try:
        height, head_hash = _head(node, genesis)
        with (scratch / BLOCKS).open("wb") as blocks:
            blocks_sha256 = _fetch(node, genesis, height, blocks, progress)
            blocks.flush()
            os.fsync(blocks.fileno())
        manifest = {
            "format": FORMAT, "chain_id": genesis.chain_id, "genesis_hash": genesis.hash.hex(),
            "height": height, "head_hash": head_hash.hex(), "blocks_sha256": blocks_sha256,
            "node": node.url, "taken_at_ms": time.time_ns() // 1_000_000,
            "store_format": FORMAT_VERSION,
        }  # fmt: skip
        (scratch / GENESIS).write_text(genesis_mod.dump_toml(genesis))
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return manifest


@click.command()
@node_option
@identity_options
@genesis_option(
    required=True,
    help_text="The genesis of the node's chain: the TLS trust, and what every block is "
    "verified against (default: $CITYLEDGER_GENESIS).",
)
@click.option("-o", "--out", "out", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="The new directory the backup is written to.")  # fmt: skip
@json_option
def backup(
    node_url: str, client_id: str | None, key_path: Path | None, genesis: Genesis, out: Path,
    as_json: bool,
) -> None:  # fmt: skip
    """Back up a running node's chain (validators and auditors): every certified block up to
    its head when the backup starts, verified against the genesis before DIR is written."""
    signer = signer_of(client_id, key_path, genesis)
    with Client(node_url, signer=signer, genesis=genesis) as node, Progress("backup") as bar:
        manifest = take_backup(node, genesis, out, bar)
    if as_json:
        echo_json(manifest | {"directory": str(out)})
        return
    click.echo(fields([
        ("backup", str(out)), ("chain", manifest["chain_id"]), ("blocks", manifest["height"]),
        ("head", manifest["head_hash"]), ("verified", "yes, from the genesis"),
    ]))  # fmt: skip


# --- restore ---------------------------------------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        with path.open("rb") as f:
            data = f.read(MANIFEST_BYTES_MAX + 1)
        manifest = json.loads(data) if len(data) <= MANIFEST_BYTES_MAX else None
    except FileNotFoundError:
        raise Failed(f"{directory} is not a backup (no {MANIFEST})") from None
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or any(f not in manifest for f in MANIFEST_FIELDS):
        raise Failed(f"{path} is not a backup manifest")
    if manifest["format"] != FORMAT:
        raise Failed(f"{path}: unknown backup format {manifest['format']!r} (this is {FORMAT})")
    return manifest


def _genesis_of(directory: Path, given: Genesis | None, manifest: dict[str, Any]) -> Genesis:
    if given is None:
        try:
            given = genesis_mod.load(directory / GENESIS)
        except InvalidGenesis as exc:
            raise Failed(f"{directory / GENESIS}: {'; '.join(exc.problems)}") from None
    if given.hash.hex() != manifest["genesis_hash"]:
        raise Failed(f"the backup is of genesis {manifest['genesis_hash']}, not {given.hash.hex()}")
    return given


def _pairs(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """The [block, certificate] items of a blocks file, each bounded in size."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=PAIR_BYTES_MAX)
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            unpacker.feed(chunk)
            for item in unpacker:
                if not (isinstance(item, list) and len(item) == 2
                        and all(isinstance(x, bytes) for x in item)):  # fmt: skip
                    raise Failed(f"{path} holds something else than [block, certificate] pairs")
                yield item[0], item[1]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _rebuild(
    store: BlockStore, genesis: Genesis, blocks: Path, progress: Progress, end: int
) -> None:
    """Verify each block of the file from the genesis and append it, a batch at a time."""
    pending: dict[bytes, tuple[int, int]] = {}  # tx ids of the batch not yet written

    def location(tx_id: bytes) -> tuple[int, int] | None:
        return pending.get(tx_id) or store.tx_location(tx_id)

    verifier = ChainVerifier(genesis, location)
    batch: list[BlockWrite] = []
    for block_bytes, cert_bytes in _pairs(blocks):
        height = verifier.head.height + 1
        try:
            verified = verifier.feed(block_bytes, cert_bytes)
        except LedgerError as exc:
            raise Failed(f"block {height} of the backup does not verify: {exc}") from None
        pending.update((t.tx_id, (height, i)) for i, t in enumerate(verified.block.txs))
        batch.append(BlockWrite(verified.block, verified.certificate, txs_checked=True))
        if len(batch) == RESTORE_BATCH_BLOCKS:
            store.write(batch)
            batch, pending = [], {}
            progress(height, end)
    if batch:
        store.write(batch)


def restore_into(
    directory: Path, data_dir: Path, genesis: Genesis | None, progress: Progress
) -> dict[str, Any]:
    """A new store at `data_dir` holding the backup's chain, verified; the manifest."""
    manifest = read_manifest(directory)
    genesis = _genesis_of(directory, genesis, manifest)
    blocks = directory / BLOCKS
    if _file_sha256(blocks) != manifest["blocks_sha256"]:
        raise Failed(f"{blocks} is not the file the backup wrote (its SHA-256 differs)")
    _fresh(data_dir, "restore")
    scratch = _scratch(data_dir)
    try:
        with BlockStore.open(scratch, genesis) as store:
            _rebuild(store, genesis, blocks, progress, int(manifest["height"]))
            height, head_hash = store.height, store.head.hash
        if (height, head_hash.hex()) != (manifest["height"], manifest["head_hash"]):
            raise Failed(
                f"the backup's blocks end at height {height} ({head_hash.hex()}), not at the "
                f"head its manifest names ({manifest['height']}, {manifest['head_hash']})"
            )
        scratch.rename(data_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return manifest


@click.command()
@click.argument("directory", metavar="DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))  # fmt: skip
@click.option("--data-dir", "data_dir", required=True, metavar="DATA",
              type=click.Path(file_okay=False, path_type=Path),
              help="The node's data directory to create (missing or empty).")  # fmt: skip
@genesis_option(
    required=False,
    help_text="The genesis to verify the backup against (default: the backup's own copy, "
    "which must have the genesis hash its manifest names).",
)
@json_option
def restore(directory: Path, data_dir: Path, genesis: Genesis | None, as_json: bool) -> None:
    """Restore a backup into a new block store: every block verified again from the genesis.
    Start the node on DATA afterwards; it catches up with its peers from the backup's head."""
    with Progress("restore") as bar:
        manifest = restore_into(directory, data_dir, genesis, bar)
    if as_json:
        names = ("chain_id", "height", "head_hash")
        echo_json({"data_dir": str(data_dir)} | {n: manifest[n] for n in names})
        return
    click.echo(fields([
        ("restored", str(data_dir)), ("chain", manifest["chain_id"]),
        ("blocks", manifest["height"]), ("head", manifest["head_hash"]),
        ("verified", "yes, from the genesis"),
    ]))  # fmt: skip
