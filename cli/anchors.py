"""`cityledger tls-anchors --genesis GENESIS.toml`: the TLS trust anchors of a chain's nodes.

One self-issued certificate per validator of the genesis (docs/protocol.md 17.3), as PEM: with
it as its CA file, any TLS client (curl --cacert, a Prometheus scrape, Python's ssl) accepts
exactly the nodes whose certificates their validator keys issued.
"""

from pathlib import Path

import click

from cli.options import genesis_option
from ledger.genesis import Genesis
from node import tls


@click.command("tls-anchors")
@genesis_option(required=True, help_text="The genesis whose validators are trusted.")
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the PEM here instead of printing it.",
)  # fmt: skip
def tls_anchors(genesis: Genesis, out: Path | None) -> None:
    """Print the TLS trust anchors of the genesis' validators (PEM), for ordinary TLS clients."""
    pem = tls.anchors_pem(genesis)
    if out is None:
        click.echo(pem, nl=False)
        return
    out.write_text(pem)
    click.echo(f"wrote the anchors of {len(genesis.validators)} validators to {out}", err=True)
