"""`AsyncClient`: the asyncio client of one node, the same methods as `Client` (cli/client/sync.py).

aiohttp underneath: one session, signed by the caller's identity through a client middleware
(node/auth_client.py, docs/protocol.md section 16), TLS trusting only the validators in force
(learnt from the genesis alone, cli/client/trust.py),
answers bounded in size, every failure a `ClientError`. Submissions follow the retry rule of
cli/client/core.py exactly as the synchronous client does.
"""

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client import core, trust
from cli.client.core import DEFAULT_RETRY, RetryPolicy, Signer, TxStatus
from cli.client.errors import ClientError, NodeUnreachable, NotCommitted, NoTrust, Refused
from cli.client.events import RECONNECT_PAUSE_S, Event, EventParser, Subscription
from cli.client.http import (
    CHAIN_ID_PATH,
    EVENT_STREAM,
    JSON,
    MSGPACK,
    RESPONSE_BYTES_MAX,
    STREAM_IDLE_S,
    STREAM_LINE_BYTES_MAX,
    TIMEOUT_S,
    chain_genesis,
    check_url,
    path_of,
)
from ledger import proofs
from ledger import tx as txs
from ledger.genesis import Genesis
from node.auth_client import signer as signing_middleware


class AsyncClient:
    """`async with AsyncClient(url, identity=..., key=..., genesis=...) as node: ...`"""

    def __init__(
        self, url: str, *, identity: str | None = None, key: Ed25519PrivateKey | None = None,
        genesis: Genesis | None = None, timeout_s: float = TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:  # fmt: skip
        if (identity is None) != (key is None):
            raise ClientError("identity and key go together")
        self.url = check_url(url)
        self.genesis = genesis
        self.retry = retry
        self.timeout_s = timeout_s
        self.signer = None
        if identity is not None and key is not None:
            self.signer = Signer(identity, key, _chain(genesis))
        self._ssl: ssl.SSLContext | None = None  # the validators in force, learnt at first use
        self._chain_genesis = chain_genesis(genesis) if self.url.startswith("https://") else None
        if self.url.startswith("https://") and self._chain_genesis is None:
            raise NoTrust(f"the node at {self.url} speaks TLS: a genesis is needed to trust it")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None and self._chain_genesis is not None and self._ssl is None:
            self._ssl = await asyncio.to_thread(
                trust.context, self.url, self._chain_genesis, self.timeout_s
            )  # blocking I/O once per process and chain (cli/client/trust.py)
        if self._session is None:
            anonymous = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl or True))
            if self.signer is None:
                self._session = anonymous
                return anonymous
            if self.signer.chain_id is None:  # learnt anonymously, before the first signed request
                try:
                    answer = await self._request(anonymous, "GET", CHAIN_ID_PATH, None)
                finally:
                    await anonymous.close()
                self.signer.chain_id = str(answer["chain_id"])
            else:
                await anonymous.close()
            sign = signing_middleware(
                self.signer.key, chain_id=self.signer.chain_id, identity=self.signer.identity
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl or True), middlewares=(sign,)
            )
        return self._session

    # --- requests ----------------------------------------------------------------------------

    async def get(self, path: str, *, expect: tuple[str, ...] = (), binary: bool = False) -> Any:
        value = await self._request(await self._open(), "GET", path, None, binary=binary)
        return _expect(value, self.url, path, expect)

    async def _post(self, path: str, body: Any, timeout_s: float) -> Any:
        data = json.dumps(body).encode()
        return await self._request(await self._open(), "POST", path, data, timeout_s=timeout_s)

    async def _request(
        self, session: aiohttp.ClientSession, method: str, path: str, data: bytes | None, *,
        binary: bool = False, timeout_s: float | None = None,
    ) -> Any:  # fmt: skip
        headers = {"Accept": MSGPACK if binary else JSON}
        if data is not None:
            headers["Content-Type"] = JSON
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            async with session.request(
                method, self.url + path, data=data, headers=headers, timeout=timeout
            ) as response:
                raw = await response.content.read(RESPONSE_BYTES_MAX + 1)
                status, content_type = response.status, response.content_type
                retry = response.headers.get("Retry-After")
        except TimeoutError:
            raise NodeUnreachable(f"the node at {self.url} did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NodeUnreachable(f"cannot reach the node at {self.url}: {exc}") from None
        if len(raw) > RESPONSE_BYTES_MAX:
            raise NodeUnreachable(f"the node at {self.url} sent an answer that is too large")
        value = _decode(self.url, path, content_type, raw)
        if status >= 400:
            body = value if isinstance(value, dict) else {}
            code = str(body.get("error", f"http_{status}"))
            raise Refused(status, code, str(body.get("reason", f"HTTP {status}")), body, retry)
        return value

    # --- transactions ------------------------------------------------------------------------

    async def chain_id(self) -> str:
        if self.signer is not None:
            await self._open()
            assert self.signer.chain_id is not None
            return self.signer.chain_id
        if self.genesis is not None:
            return self.genesis.chain_id
        return str((await self.get(CHAIN_ID_PATH, expect=("chain_id",)))["chain_id"])

    async def build(
        self, record_key: str, record_type: str, body: Mapping[str, Any], *,
        nonce: int | None = None, timestamp_ms: int | None = None,
    ) -> txs.Transaction:  # fmt: skip
        if self.signer is None:
            raise ClientError("signing a record needs an identity and its key")
        await self.chain_id()
        return core.build_tx(
            self.signer, record_key, record_type, body, nonce=nonce, timestamp_ms=timestamp_ms
        )

    async def submit(
        self, tx: txs.Transaction, *, wait: bool = False, timeout_s: float = core.WAIT_TIMEOUT_S
    ) -> TxStatus:
        """As `Client.submit`: the retry rule, 409 `duplicate` is success."""
        deadline = time.monotonic() + timeout_s
        path = "/v1/transactions" + ("?wait=true" if wait else "")
        for attempt in range(1, self.retry.attempts + 1):
            try:
                value = await self._post(path, core.submission(tx), timeout_s)
                status = TxStatus.of(_expect(value, self.url, path, core.STATUS_FIELDS))
                break
            except ClientError as exc:
                if isinstance(exc, Refused) and core.is_duplicate(exc):
                    status = await self.status(tx.tx_id.hex())
                    break
                if not core.is_retryable(exc) or attempt == self.retry.attempts:
                    raise
                await asyncio.sleep(self.retry.pause_s(attempt, core.retry_after(exc)))
        if wait and not status.committed:
            return await self.wait(status.tx_id, max(0.0, deadline - time.monotonic()))
        return status

    async def status(self, tx_id: str) -> TxStatus:
        return TxStatus.of(await self.get(f"/v1/transactions/{tx_id}", expect=core.STATUS_FIELDS))

    async def wait(self, tx_id: str, timeout_s: float = core.WAIT_TIMEOUT_S) -> TxStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status(tx_id)
            if status.committed:
                return status
            if status.status == "expired" or time.monotonic() >= deadline:
                raise NotCommitted(tx_id, status.status, f"tx {tx_id} is {status.status}")
            await asyncio.sleep(min(core.WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    # --- reads and proofs --------------------------------------------------------------------

    async def record(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = await self.get("/v1/records/" + path_of(key),
                                               expect=core.RECORD_FIELDS)  # fmt: skip
        return value

    async def history(self, key: str) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self.get(
                "/v1/history/" + path_of(key) + core.query(cursor=cursor),
                expect=core.HISTORY_FIELDS,
            )
            for version in page["versions"]:
                yield version
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def query_page(
        self, prefix: str = "", record_type: str | None = None, *, cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        value: dict[str, Any] = await self.get(
            "/v1/records" + core.records_query(prefix, record_type, cursor, limit),
            expect=core.QUERY_FIELDS,
        )
        return value

    async def query(
        self, prefix: str = "", record_type: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self.query_page(prefix, record_type, cursor=cursor)
            for record in page["records"]:
                yield record
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def events(
        self, *, from_height: int | None = None, prefix: str = "", last_id: str | None = None
    ) -> AsyncIterator[Event]:
        """As `Client.events`: resumes with the last id it saw whenever a stream ends."""
        subscription = Subscription(
            self.url, from_height=from_height, prefix=prefix, last_id=last_id
        )
        while True:
            stream = self._stream(subscription.path(), subscription.headers())
            try:
                async with contextlib.aclosing(stream):  # the connection closes when we stop
                    async for event in stream:
                        if not subscription.take(event):
                            break
                        yield event
            except NodeUnreachable:
                pass
            subscription.ended()
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _stream(self, path: str, headers: dict[str, str]) -> AsyncGenerator[Event, None]:
        """One event stream's events until it ends; `Refused` on an error status."""
        session = await self._open()
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s,
                                        sock_read=STREAM_IDLE_S)  # fmt: skip
        parser = EventParser()
        headers = {"Accept": EVENT_STREAM, **headers}
        try:
            async with session.get(self.url + path, timeout=timeout, headers=headers) as answer:
                if answer.status >= 400:
                    raw = await answer.content.read(RESPONSE_BYTES_MAX)
                    value = _decode(self.url, path, answer.content_type, raw)
                    body = value if isinstance(value, dict) else {}
                    code = str(body.get("error", f"http_{answer.status}"))
                    raise Refused(answer.status, code, str(body.get("reason", "")), body)
                async for line in _lines(answer.content, self.url):
                    event = parser.line(line)
                    if event is not None:
                        yield event
        except TimeoutError:
            raise NodeUnreachable(f"the event stream of {self.url} went silent") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NodeUnreachable(f"the event stream of {self.url} broke: {exc}") from None

    async def block(self, height: int | str = "latest") -> dict[str, Any]:
        value: dict[str, Any] = await self.get(f"/v1/blocks/{height}", expect=core.BLOCK_FIELDS)
        return value

    async def chain(
        self, start: int, end: int | None = None
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        value = await self.get(
            "/v1/chain" + core.query(**{"from": start, "to": end}),
            expect=core.CHAIN_FIELDS, binary=True,
        )  # fmt: skip
        return core.chain_pairs(value, start)

    async def stable_checkpoint(self) -> tuple[int, bytes]:
        doc = await self.get("/v1/checkpoint/stable", expect=core.STABLE_FIELDS)
        height = core.stable_height(doc)
        members = await asyncio.to_thread(
            trust.members_of_block, self.url, self._genesis(), self.timeout_s, height
        )
        return core.verify_stable_checkpoint(doc, members)

    async def proof(self, tx_id: str) -> dict[str, Any]:
        value: dict[str, Any] = await self.get(
            f"/v1/transactions/{tx_id}/proof", expect=("format", "tx_id")
        )
        return value

    async def prove(self, tx_id: str) -> proofs.Proven:
        return proofs.verify_bundle(await self.proof(tx_id), self._genesis())

    def _genesis(self) -> Genesis:
        if self.genesis is None:
            raise ClientError("verifying needs the genesis of the chain")
        return self.genesis


def _chain(genesis: Genesis | None) -> str | None:
    return None if genesis is None else genesis.chain_id


async def _lines(content: aiohttp.StreamReader, url: str) -> AsyncIterator[str]:
    """The lines of a stream without their ends, each at most `STREAM_LINE_BYTES_MAX` bytes."""
    buffer = b""
    while chunk := await content.readany():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if len(line) > STREAM_LINE_BYTES_MAX:
                raise NodeUnreachable(f"the node at {url} sent too long a line")
            yield line.decode("utf-8", "replace").rstrip("\r")
        if len(buffer) > STREAM_LINE_BYTES_MAX:
            raise NodeUnreachable(f"the node at {url} sent too long a line")


def _expect(value: Any, url: str, path: str, names: tuple[str, ...]) -> Any:
    if names and not (isinstance(value, dict) and all(n in value for n in names)):
        raise NodeUnreachable(
            f"the node at {url} answered {path} without the fields {', '.join(names)}"
        )
    return value


def _decode(url: str, path: str, content_type: str, raw: bytes) -> Any:
    try:
        if content_type.startswith(MSGPACK):
            return msgpack.unpackb(raw, raw=False)
        return json.loads(raw)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise NodeUnreachable(
            f"the node at {url} answered {path} with neither JSON nor msgpack"
        ) from None
