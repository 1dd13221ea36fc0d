"""The transport of the client library: one node's `/v1` API over one synchronous keep-alive
connection (`NodeClient`).

It owns the translation of every network failure into one sentence (`NodeUnreachable`) and of
every refusal into `Refused` with the node's `{"error", "reason"}`. Answers are bounded
(`RESPONSE_BYTES_MAX`); JSON by default, msgpack (byte strings as bytes) on request. Given a
`Signer`, it signs every request with that identity (docs/protocol.md section 16), afresh for
each attempt. It never verifies or retries anything but a GET on a keep-alive connection the
server closed.

An https:// node is reached over TLS 1.3 and trusted only if its certificate was issued by a
validator in force on the chain of the genesis the client is given (`--genesis`,
`$CITYLEDGER_GENESIS`), learnt from that genesis alone (cli/client/trust.py): never the
system's certificate store (docs/protocol.md section 17). http:// is for `insecure` nodes.
"""

import http.client
import json
import os
import ssl
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import msgpack

from cli.client import trust
from cli.client.core import Signer
from cli.client.errors import ClientError, NodeUnreachable, NoTrust, Refused, unreachable
from ledger import genesis as genesis_mod
from ledger.errors import InvalidGenesis
from node import auth_request, tls

DEFAULT_NODE: Final = "https://127.0.0.1:7001"
NODE_ENV: Final = "CITYLEDGER_NODE"
CLIENT_ENV: Final = "CITYLEDGER_CLIENT"
KEY_ENV: Final = "CITYLEDGER_KEY"
CHAIN_ID_PATH: Final = "/v1/auth/challenge"  # anonymous; names the node's chain id
GENESIS_ENV: Final = "CITYLEDGER_GENESIS"
TIMEOUT_S: Final = 10.0
RESPONSE_BYTES_MAX: Final = 256 * 1024 * 1024  # a block of the largest size, hex-encoded, twice
JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
EVENT_STREAM: Final = "text/event-stream"
STREAM_IDLE_S: Final = 60.0  # silence on an event stream (the node sends a comment each 15 s)
STREAM_LINE_BYTES_MAX: Final = 1024 * 1024  # one line of an event stream
_STALE: Final = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def check_url(url: str) -> str:
    """Return `url` without a trailing slash; raise ValueError unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL of a node")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a node URL has no ?query or #fragment")
    return url.rstrip("/")


def path_of(*segments: str) -> str:
    """A URL path with each segment percent-encoded (record keys keep their '/')."""
    return "/".join(quote(s, safe="/") for s in segments)


@dataclass(frozen=True)
class Answer:
    status: int
    value: Any


def trusted_nodes(genesis: genesis_mod.Genesis | None) -> ssl.SSLContext | None:
    """The TLS context that trusts exactly the validators of `genesis` (not the ones governance
    added since: `trust.context` learns those), else of the genesis named by
    `$CITYLEDGER_GENESIS`; None if there is neither."""
    genesis = chain_genesis(genesis)
    return None if genesis is None else tls.genesis_client_context(genesis)


def chain_genesis(genesis: genesis_mod.Genesis | None) -> genesis_mod.Genesis | None:
    """`genesis`, else the one `$CITYLEDGER_GENESIS` names; None if there is neither."""
    if genesis is None and os.environ.get(GENESIS_ENV):
        path = Path(os.environ[GENESIS_ENV])
        try:
            genesis = genesis_mod.load(path)
        except InvalidGenesis as exc:
            raise ClientError(
                f"${GENESIS_ENV}: {path} is not a valid genesis file: {exc}"
            ) from None
    return genesis


class NodeClient:
    """One node's API. Use as a context manager, or call `close`.

    `genesis`: the chain whose validators an https:// node must be one of (else the one
    `$CITYLEDGER_GENESIS` names); an https:// node cannot be reached without one."""

    def __init__(
        self, url: str, timeout_s: float = TIMEOUT_S, signer: Signer | None = None, *,
        genesis: genesis_mod.Genesis | None = None,
    ) -> None:  # fmt: skip
        self.url = check_url(url)
        self.signer = signer
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._genesis = chain_genesis(genesis) if self._https else None
        self._context: ssl.SSLContext | None = None  # the validators in force, at first use
        self._relearnt = False  # the set was asked for again after a certificate failed
        if self._https and self._genesis is None:
            raise NoTrust(
                f"the node at {self.url} speaks TLS: pass --genesis GENESIS.toml (or set "
                f"${GENESIS_ENV}) so that its certificate can be checked against the validators "
                "of its chain"
            )
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> "NodeClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- requests ----------------------------------------------------------------------------

    def get(
        self, path: str, *, expect: tuple[str, ...] = (), binary: bool = False,
        timeout_s: float | None = None,
    ) -> Any:  # fmt: skip
        """The decoded answer to GET `path`, an object with at least the fields `expect`;
        raise `Refused` on an error status."""
        answer = self.request("GET", path, binary=binary, timeout_s=timeout_s)
        return self.expect(answer.value, path, expect)

    def post(
        self, path: str, body: Any, *, expect: tuple[str, ...] = (), timeout_s: float | None = None
    ) -> Answer:
        """POST `body` as JSON; raise `Refused` on an error status."""
        data = json.dumps(body).encode()
        answer = self.request("POST", path, data=data, timeout_s=timeout_s)
        self.expect(answer.value, path, expect)
        return answer

    def expect(self, value: Any, path: str, names: tuple[str, ...]) -> Any:
        """`value` if it is an object holding every field of `names` (a node's answer)."""
        if names and not (isinstance(value, dict) and all(n in value for n in names)):
            raise NodeUnreachable(
                f"the node at {self.url} answered {path} without the fields of a CityLedger "
                f"answer ({', '.join(names)}): is it a CityLedger node?"
            )
        return value

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        binary: bool = False,
        timeout_s: float | None = None,
    ) -> Answer:
        accept = MSGPACK if binary else JSON
        status, content_type, raw, retry = self._exchange(method, path, data, accept, timeout_s)
        try:
            value = self._decode(path, content_type, raw)
        except NodeUnreachable:
            if status < 500:
                raise
            raise NodeUnreachable(
                f"the node at {self.url} failed to answer {path} (HTTP {status}); "
                "its log has the details"
            ) from None
        if status >= 400:
            body = value if isinstance(value, dict) else {}
            code = str(body.get("error", f"http_{status}"))
            reason = str(body.get("reason", f"HTTP status {status}"))
            raise Refused(status, code, reason, body, retry)
        return Answer(status, value)

    def stream_lines(
        self, path: str, headers: dict[str, str] | None = None
    ) -> Generator[str, None, None]:
        """GET `path` (an event stream) and yield its lines as they arrive, without their line
        ends; raise `Refused` on an error status, `NodeUnreachable` when the connection fails
        or stays silent for `STREAM_IDLE_S`. The connection is closed when the stream ends."""
        signed = self._signed("GET", self._prefix + path, b"", self.timeout_s)
        conn = self._connection(STREAM_IDLE_S)
        try:
            conn.request("GET", self._prefix + path,
                         headers={"Accept": EVENT_STREAM, **(headers or {}), **signed})  # fmt: skip
            response = conn.getresponse()
            if response.status >= 400:
                raw = response.read(RESPONSE_BYTES_MAX)
                value = self._decode(path, response.getheader("Content-Type", ""), raw)
                body = value if isinstance(value, dict) else {}
                raise Refused(response.status, str(body.get("error", f"http_{response.status}")),
                              str(body.get("reason", "")), body)  # fmt: skip
            while line := response.readline(STREAM_LINE_BYTES_MAX + 1):
                if len(line) > STREAM_LINE_BYTES_MAX:
                    raise NodeUnreachable(f"the node at {self.url} sent too long a line")
                yield line.decode("utf-8", "replace").rstrip("\r\n")
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, STREAM_IDLE_S) from None
        finally:
            self.close()

    def _exchange(
        self, method: str, path: str, data: bytes | None, accept: str, timeout_s: float | None
    ) -> tuple[int, str, bytes, str | None]:
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = JSON
        timeout = self.timeout_s if timeout_s is None else timeout_s
        for attempt in (1, 2, 3):
            signed = self._signed(method, self._prefix + path, data or b"", timeout)
            reused = self._conn is not None
            conn = self._connection(timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers | signed)
                response = conn.getresponse()
                raw = response.read(RESPONSE_BYTES_MAX + 1)
            except _STALE as exc:
                self.close()
                if reused and method == "GET" and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: reconnect
                raise self._unreachable(exc, timeout) from None
            except ssl.SSLCertVerificationError as exc:
                self.close()
                if self._relearn(timeout):
                    continue  # a validator added since the set known: trusted if now in force
                raise self._unreachable(exc, timeout) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._unreachable(exc, timeout) from None
            if len(raw) > RESPONSE_BYTES_MAX:
                self.close()
                raise NodeUnreachable(f"the node at {self.url} sent an answer that is too large")
            if response.will_close:
                self.close()
            content_type = response.getheader("Content-Type", "")
            return response.status, content_type, raw, response.getheader("Retry-After")
        raise AssertionError("unreachable")  # pragma: no cover

    def _signed(self, method: str, target: str, body: bytes, timeout: float) -> dict[str, str]:
        """The authentication headers of one attempt (none without a signer)."""
        signer = self.signer
        if signer is None:
            return {}
        if signer.chain_id is None:
            self.signer = None  # ask anonymously, once
            try:
                answer = self.get(CHAIN_ID_PATH, expect=("chain_id",), timeout_s=timeout)
            finally:
                self.signer = signer
            signer.chain_id = str(answer["chain_id"])
        return dict(
            auth_request.sign_headers(
                signer.key,
                chain_id=signer.chain_id,
                identity=signer.identity,
                method=method,
                target=target,
                body=body,
                now_ms=time.time_ns() // 1_000_000,
            )
        )

    def _relearn(self, timeout: float) -> bool:
        """Ask the node for the validators in force once more (docs/protocol.md 14.6), once
        per client: whether there is a new set to try."""
        if not self._https or self._relearnt or self._genesis is None:
            return False
        self._relearnt = True
        self._context = trust.context(self.url, self._genesis, timeout, force=True)
        return True

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                if self._context is None:
                    assert self._genesis is not None
                    self._context = trust.context(self.url, self._genesis, timeout)
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        self._conn.timeout = timeout
        return self._conn

    def _unreachable(self, exc: BaseException, timeout: float) -> NodeUnreachable:
        return unreachable(self.url, self._host, exc, timeout)

    def _decode(self, path: str, content_type: str, raw: bytes) -> Any:
        try:
            if content_type.startswith(MSGPACK):
                return msgpack.unpackb(raw, raw=False)
            return json.loads(raw)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
            raise NodeUnreachable(
                f"the node at {self.url} answered {path} with something that is neither JSON "
                "nor msgpack (is it a CityLedger node?)"
            ) from None
