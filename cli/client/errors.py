"""What the client library raises: every failure is a `ClientError` with one readable sentence.

`NodeUnreachable`: no usable answer (refused connection, timeout, TLS failure, not a CityLedger
node). `Refused`: the node answered with an error status; `status`, `code` and `reason` are
the node's, `body` its whole error object. `NotCommitted`: a wait ran out before the tx was
committed (it may still commit: ask again). The CLI turns each into one line and exit 1.
"""

import http.client
import socket
import ssl
from typing import Any


class ClientError(Exception):
    """Anything the library cannot do for the caller; `str()` is one sentence."""


class NodeUnreachable(ClientError):
    """No usable HTTP answer: refused, unknown host, timeout, not HTTP, not JSON."""


class NoTrust(ClientError):
    """An https:// node and no genesis to check its certificate against."""


class Refused(ClientError):
    """The node answered with an error status; `code` and `reason` are the node's."""

    def __init__(
        self, status: int, code: str, reason: str, body: dict[str, Any],
        retry_after: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.body = body
        self.retry_after = retry_after  # the node's Retry-After header, if it sent one


class NotCommitted(ClientError):
    """A wait for a tx's commit ran out; `tx_id` is the tx, `status` its last known status."""

    def __init__(self, tx_id: str, status: str, message: str) -> None:
        super().__init__(message)
        self.tx_id = tx_id
        self.status = status


def unreachable(url: str, host: str, exc: BaseException, timeout_s: float) -> NodeUnreachable:
    """The sentence for a request to the node at `url` (host `host`) that got no usable
    answer because of `exc`."""
    where = f"the node at {url}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return NodeUnreachable(f"{where} did not answer within {timeout_s:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return NodeUnreachable(
            f"cannot reach {where}: connection refused (is the node running? "
            "pass --node URL or set CITYLEDGER_NODE)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return NodeUnreachable(
            f"{where} is not a validator in force: its TLS certificate was not issued by "
            "the key of any validator the genesis given and its chain's governance put in "
            "force (is --genesis the genesis of its chain? was the node removed or re-keyed?)"
        )
    if isinstance(exc, ssl.SSLError):
        return NodeUnreachable(
            f"{where} did not complete a TLS 1.3 handshake ({exc.reason or exc}); an "
            "insecure node is reached with http://"
        )
    if isinstance(exc, socket.gaierror):
        return NodeUnreachable(f"cannot reach {where}: unknown host {host!r}")
    if isinstance(exc, http.client.HTTPException | ConnectionResetError):
        return NodeUnreachable(f"{where} did not answer in HTTP (is it a CityLedger node?)")
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return NodeUnreachable(f"cannot reach {where}: {detail}")
