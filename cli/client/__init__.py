"""The CityLedger client library: what the `cityledger` command uses, and agency systems import.

    from cli.client import Client, load_genesis
    genesis = load_genesis("genesis.toml")
    with Client("https://127.0.0.1:7001", identity="fiscal-clerk", key=key,
                genesis=genesis) as node:
        status = node.submit(node.build("fiscal/budget/2027", "record", {"amount": 1}),
                             wait=True)
        proven = node.prove(status.tx_id)

`Client` is synchronous, `AsyncClient` the same for asyncio; both sign every request with the
caller's identity (docs/protocol.md section 16), trust an https:// node only if a validator of
the genesis issued its certificate (section 17), and submit under one retry rule
(cli/client/core.py): docs/client.md says all of it, with examples.
"""

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client.aio import AsyncClient
from cli.client.core import NO_RETRY, RetryPolicy, Signer, TxStatus, build_tx
from cli.client.errors import ClientError, NodeUnreachable, NotCommitted, NoTrust, Refused
from cli.client.http import NodeClient
from cli.client.sync import Client
from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.proofs import InvalidProof, Proven

__all__ = [
    "NO_RETRY", "AsyncClient", "Client", "ClientError", "InvalidProof", "NoTrust", "NodeClient",
    "NodeUnreachable", "NotCommitted", "Proven", "Refused", "RetryPolicy", "Signer", "TxStatus",
    "build_tx", "load_genesis", "load_key",
]  # fmt: skip


def load_genesis(path: str | Path) -> genesis_mod.Genesis:
    """A genesis file, checked (raises `ledger.errors.InvalidGenesis` with every problem)."""
    return genesis_mod.load(Path(path))


def load_key(path: str | Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """An Ed25519 PKCS#8 PEM private key, encrypted (with `passphrase`) or not."""
    return crypto.load_private_key(Path(path), passphrase)
