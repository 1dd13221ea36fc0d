"""`cityledger verify | proof | verify-proof`: the auditor's commands.

`verify --data-dir` re-checks a store offline with `ledger.verify.verify_chain`; `verify --node`
fetches the chain a page at a time (GET /v1/chain, msgpack: certified blocks as their exact
bytes) and feeds them to the ledger's streaming `ChainVerifier`, trusting nothing the node says
but the bytes it can check. Both end with a one-line verdict. `proof` exports a node's bundle;
`verify-proof` checks one with `ledger.proofs`, the one bundle verifier, and prints what it
proves.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import click

from cli.api import CHAIN_ID_PATH, NODE_ENV, NodeClient, Refused, check_url
from cli.client.core import CHAIN_FIELDS, query
from cli.errors import Failed
from cli.options import genesis_option, identity_options, json_option, node_option, signer_of
from cli.output import Progress, echo_json, fields, short, timestamp
from cli.records import TX_ID_ARG, refused
from ledger import proofs
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.store import BlockStore
from ledger.verify import ChainVerifier, VerifyReport, verify_chain

FETCH_TIMEOUT_S: Final = 30.0
CHAIN_PATH: Final = "/v1/chain"


# --- verify ----------------------------------------------------------------------------------


def _store_dir(path: Path) -> Path:
    """The LevelDB directory: `path` itself, or a node directory's `data/`."""
    if (path / "CURRENT").is_file():
        return path
    if (path / "data" / "CURRENT").is_file():
        return path / "data"
    raise click.BadParameter(
        f"{path} is not a node's block store (no LevelDB in it)", param_hint="--data-dir"
    )


def verify_store(path: Path, genesis: Genesis, progress: Progress) -> tuple[VerifyReport, Any]:
    try:
        store = BlockStore.open_for_audit(path, genesis)
    except LedgerError as exc:
        raise Failed(f"{exc}; a running node's chain is verified with --node URL") from None
    with store:
        report = verify_chain(store, genesis, progress)
        head = store.head_pointer() if report.ok else None
    return report, head


class TxLocations:
    """Where each tx seen so far was committed: the stream's duplicate check.

    A fetched chain has no index to ask, so this holds every tx id of the chain verified so
    far (about 150 bytes each); a store is verified offline with its own index instead."""

    def __init__(self) -> None:
        self._where: dict[bytes, tuple[int, int]] = {}

    def __call__(self, tx_id: bytes) -> tuple[int, int] | None:
        return self._where.get(tx_id)

    def add(self, tx_id: bytes, height: int, index: int) -> None:
        self._where[tx_id] = (height, index)


def certified_pair(item: Any, height: int) -> tuple[bytes, bytes]:
    """The exact bytes of block `height` and its certificate, from one entry of a chain page."""
    if not (
        isinstance(item, dict)
        and item.get("height") == height
        and isinstance(item.get("block"), bytes)
        and isinstance(item.get("certificate"), bytes)
    ):
        raise LedgerError(f"the node's answer for block {height} is malformed")
    return item["block"], item["certificate"]


def verify_stream(
    client: NodeClient, genesis: Genesis, progress: Progress
) -> tuple[VerifyReport, Any]:
    chain_id = client.get(CHAIN_ID_PATH, expect=("chain_id",))["chain_id"]  # anonymous
    if chain_id != genesis.chain_id:  # before a signature for this genesis's chain is refused
        raise Failed(
            f"the node at {client.url} serves chain {chain_id!r}, not this genesis's chain"
        )
    try:
        status = client.get(
            "/v1/status", expect=("chain_id", "genesis_hash", "height", "head_hash")
        )
    except Refused as exc:
        raise refused(exc, "verify --node") from None
    if status.get("genesis_hash") != genesis.hash.hex():
        raise Failed(
            f"the node at {client.url} serves chain {status.get('chain_id')!r} "
            f"(genesis {status.get('genesis_hash')}), not this genesis's chain"
        )
    end, head_hash = status["height"], str(status["head_hash"])
    if isinstance(end, bool) or not isinstance(end, int) or end < 0:
        raise Failed(f"the node at {client.url} reports no valid height in its status")
    locations = TxLocations()
    verifier = ChainVerifier(genesis, locations)
    height = 1
    while height <= end:
        try:
            path = CHAIN_PATH + query(**{"from": height, "to": end})
            page = client.get(path, expect=CHAIN_FIELDS, binary=True, timeout_s=FETCH_TIMEOUT_S)
        except Refused as exc:
            if exc.status in (401, 403):  # who asks, not what the chain holds
                raise refused(exc, "verify --node") from None
            return _failed(verifier, height, f"the node did not serve it: {exc.reason}"), None
        items = page["blocks"] if isinstance(page["blocks"], list) else []
        if not items:
            return _failed(verifier, height, "the node served no block below its head"), None
        for item in items[: end - height + 1]:
            try:
                verified = verifier.feed(*certified_pair(item, height))
            except LedgerError as exc:
                return _failed(verifier, height, str(exc)), None
            for index, t in enumerate(verified.block.txs):
                locations.add(t.tx_id, height, index)
            height += 1
        progress(height - 1, end)
    if verifier.head.hash.hex() != head_hash:
        reason = f"the node's status names head {head_hash}, not the block it served"
        return _failed(verifier, end, reason), None
    report = VerifyReport(
        ok=True,
        blocks_checked=verifier.blocks_checked,
        txs_checked=verifier.txs_checked,
        first_bad_height=None,
        reason="",
    )
    return report, (verifier.head.height, verifier.head.hash)


def _failed(verifier: ChainVerifier, height: int, reason: str) -> VerifyReport:
    return VerifyReport(
        ok=False,
        blocks_checked=verifier.blocks_checked,
        txs_checked=verifier.txs_checked,
        first_bad_height=height,
        reason=reason,
    )


def _verify_source(data_dir: Path | None, node_url: str | None) -> tuple[Path | None, str | None]:
    if data_dir is None and node_url is None and os.environ.get(NODE_ENV):
        try:
            node_url = check_url(os.environ[NODE_ENV])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=f"${NODE_ENV}") from None
    if (data_dir is None) == (node_url is None):
        raise click.UsageError("give exactly one of --data-dir DIR or --node URL")
    return data_dir, node_url


def _node_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A node's block store (its data/ directory), checked offline.",
)
@click.option(
    "--node",
    "node_url",
    metavar="URL",
    callback=_node_url,
    help=f"A running node whose chain is fetched and checked (default ${NODE_ENV}).",
)
@identity_options
@genesis_option(required=True, help_text="The genesis of the chain: the only thing trusted.")
@json_option
def verify(
    data_dir: Path | None, node_url: str | None, client_id: str | None, key_path: Path | None,
    genesis: Genesis, as_json: bool,
) -> None:  # fmt: skip
    """Verify a whole chain against its genesis: every block, link, root, tx and certificate.

    Ends with a one-line verdict; on failure it names the first bad height and exits 1. With
    --node, the identity (--client/--key) must be an auditor's or a validator's.
    """
    data_dir, node_url = _verify_source(data_dir, node_url)
    with Progress("verifying") as progress:
        if data_dir is not None:
            source = str(data_dir)
            report, head = verify_store(_store_dir(data_dir), genesis, progress)
        else:
            assert node_url is not None
            source = node_url
            signer = signer_of(client_id, key_path, genesis)
            with NodeClient(node_url, FETCH_TIMEOUT_S, signer, genesis=genesis) as client:
                report, head = verify_stream(client, genesis, progress)
    if as_json:
        echo_json(
            {
                "ok": report.ok,
                "source": source,
                "chain_id": genesis.chain_id,
                "genesis_hash": genesis.hash.hex(),
                "blocks_checked": report.blocks_checked,
                "txs_checked": report.txs_checked,
                "first_bad_height": report.first_bad_height,
                "reason": report.reason or None,
                "head_height": head[0] if head else None,
                "head_hash": head[1].hex() if head else None,
            }
        )
    elif report.ok:
        assert head is not None
        click.echo(
            f"OK: {report.blocks_checked} blocks and {report.txs_checked} txs of chain "
            f"{genesis.chain_id!r} verified from genesis to head {head[0]} "
            f"({short(head[1].hex())}); every link, root, signature and certificate holds"
        )
    else:
        where = "" if report.first_bad_height is None else f" at height {report.first_bad_height}"
        click.echo(f"FAILED{where}: {report.reason}")
    if not report.ok:
        click.get_current_context().exit(1)


# --- proof -----------------------------------------------------------------------------------


def export_bundle(client: NodeClient, tx_id: str) -> dict[str, Any]:
    """The node's proof bundle of `tx_id`, as the node sent it: trusted only once verified."""
    try:
        doc: dict[str, Any] = client.get(
            f"/v1/transactions/{tx_id}/proof", expect=("height", "index")
        )
    except Refused as exc:
        raise refused(exc, f"tx {tx_id}") from None
    return doc


@click.command()
@node_option
@identity_options
@TX_ID_ARG
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the bundle to this file (default: print it).",
)
@genesis_option(
    required=False,
    help_text="Check the bundle against this genesis first; trust only the validators in force "
    "on its chain, learnt from it (default: $CITYLEDGER_GENESIS).",
)
@json_option
def proof(
    node_url: str, client_id: str | None, key_path: Path | None, tx_id: str,
    output: Path | None, genesis: Genesis | None, as_json: bool,
) -> None:  # fmt: skip
    """Export a proof bundle: everything needed to prove, offline, that a tx is in the ledger
    and which validators certified its block. Check it with `cityledger verify-proof`.
    The identity (--client/--key) must be one that may read the tx's record."""
    signer = signer_of(client_id, key_path, genesis)
    with NodeClient(node_url, FETCH_TIMEOUT_S, signer, genesis=genesis) as client:
        doc = export_bundle(client, tx_id)
    if genesis is not None:
        try:
            proofs.verify_bundle(doc, genesis)
        except proofs.InvalidProof as exc:
            raise Failed(f"the node's bundle does not verify: {exc}") from None
    text = json.dumps(doc, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text)
    anchor = doc.get("anchor")
    summary = {
        "tx_id": tx_id,
        "height": doc["height"],
        "index": doc["index"],
        "anchor_height": anchor.get("height") if isinstance(anchor, dict) else None,
        "file": str(output),
    }
    if as_json:
        echo_json(summary)
        return
    anchored = f", anchored at block {summary['anchor_height']}" if anchor else ""
    click.echo(
        f"proof of tx {tx_id} (block {doc['height']}, index {doc['index']}{anchored}) "
        f"written to {output}"
    )


# --- verify-proof ----------------------------------------------------------------------------


def _read(file: str) -> bytes:
    limit = proofs.BUNDLE_BYTES_MAX + 1
    if file == "-":
        return sys.stdin.buffer.read(limit)
    try:
        with open(file, "rb") as handle:
            return handle.read(limit)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None


def _ids(members: Genesis, indices: list[int]) -> list[str]:
    """Validator ids by index, in the configuration a certificate was checked against."""
    return [members.validators[i].id for i in indices]


def proven_view(p: proofs.Proven, genesis: Genesis) -> dict[str, Any]:
    votes = [i for i, _ in p.block.certificate.votes]
    anchor = p.anchor
    return {
        "ok": True,
        "tx_id": p.tx.tx_id.hex(),
        "chain_id": genesis.chain_id,
        "key": p.tx.key,
        "type": p.tx.type,
        "client_id": p.tx.client_id,
        "height": p.block.header.height,
        "index": p.index,
        "tx_count": p.tx_count,
        "outcome": "refused" if p.outcome else "accepted",
        "reason": p.outcome or None,
        "block_hash": p.block.block_hash.hex(),
        "signers": [p.block.members.validators[i].id for i in votes],
        "anchor_height": anchor.header.height if anchor else None,
        "anchor_signers": _ids(anchor.members, [i for i, _ in anchor.certificate.votes])
        if anchor
        else None,
        "governance_changes": p.changes,
    }


@click.command("verify-proof")
@click.argument("file", metavar="FILE")
@genesis_option(required=True, help_text="The genesis of the chain: the only thing trusted.")
@json_option
def verify_proof(file: str, genesis: Genesis, as_json: bool) -> None:
    """Check a proof bundle offline against the genesis alone (FILE - reads stdin).

    Fails (exit 1) with the reason if any part of it was altered."""
    try:
        proven = proofs.verify_bundle(proofs.parse(_read(file)), genesis)
    except proofs.InvalidProof as exc:
        if as_json:
            echo_json({"ok": False, "reason": str(exc)})
        raise Failed(f"the proof does not verify: {exc}") from None
    view = proven_view(proven, genesis)
    if as_json:
        echo_json(view)
        return
    members = proven.block.members
    quorum, n = members.quorums.commit, len(members.validators)
    header = proven.block.header
    pairs: list[tuple[str, object]] = [
        ("record", f"{proven.tx.key} ({proven.tx.type}) by {proven.tx.client_id}"),
        ("tx", view["tx_id"]),
        (
            "block",
            (
                f"{header.height} ({short(view['block_hash'])}), index {proven.index} of "
                f"{proven.tx_count}, {timestamp(header.timestamp_ms)}"
            ),
        ),
        (
            "certified by",
            f"{', '.join(view['signers'])} ({len(view['signers'])} of {n}; {quorum} needed)",
        ),
    ]
    pairs.append(("outcome", view["outcome"] + (f" ({proven.outcome})" if proven.outcome else "")))
    if proven.changes:
        pairs.append(("governance", f"{proven.changes} changes since genesis, replayed"))
    if proven.anchor is not None:
        anchor = proven.anchor
        signers = ", ".join(_ids(anchor.members, [i for i, _ in anchor.certificate.votes]))
        pairs.append(("anchored at", f"block {anchor.header.height}, certified by {signers}"))
    click.echo(fields(pairs))
    click.echo(
        f"VALID: tx {short(view['tx_id'])} is committed in block {header.height} of "
        f"chain {genesis.chain_id!r}, certified by {len(view['signers'])} of {n} "
        "validators"
    )
