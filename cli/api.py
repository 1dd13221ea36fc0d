"""The names the commands have always imported from here; the client library owns them now
(cli/client/: the transport in http.py, the typed clients in sync.py and aio.py)."""

from cli.client.core import Signer
from cli.client.errors import NodeUnreachable, Refused
from cli.client.http import (
    CHAIN_ID_PATH,
    CLIENT_ENV,
    DEFAULT_NODE,
    GENESIS_ENV,
    KEY_ENV,
    NODE_ENV,
    RESPONSE_BYTES_MAX,
    TIMEOUT_S,
    Answer,
    NodeClient,
    check_url,
    path_of,
    trusted_nodes,
)

__all__ = [
    "CHAIN_ID_PATH", "CLIENT_ENV", "DEFAULT_NODE", "GENESIS_ENV", "KEY_ENV", "NODE_ENV",
    "RESPONSE_BYTES_MAX", "TIMEOUT_S", "Answer", "NodeClient", "NodeUnreachable", "Refused",
    "Signer", "check_url", "path_of", "trusted_nodes",
]  # fmt: skip
