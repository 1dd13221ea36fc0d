"""`Client`: the synchronous client of one node, for scripts, agency systems and the CLI.

It signs every request with the caller's identity, trusts an https:// node only if a validator
in force issued its certificate (learnt from the genesis alone, cli/client/trust.py), builds
and signs transactions, submits them under the retry rule of cli/client/core.py, waits for
commits, reads records, histories, blocks and the raw certified chain, queries records by
prefix and type, follows the event stream (resuming where it broke off), and fetches and
verifies proofs against the genesis. Every failure is a `ClientError` (cli/client/errors.py).
One keep-alive connection: use it from one thread.
"""

import time
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client import core, trust
from cli.client.core import DEFAULT_RETRY, RetryPolicy, Signer, TxStatus
from cli.client.errors import ClientError, NodeUnreachable, NotCommitted, Refused
from cli.client.events import RECONNECT_PAUSE_S, Event, Subscription, parse
from cli.client.http import CHAIN_ID_PATH, TIMEOUT_S, NodeClient, path_of
from ledger import proofs
from ledger import tx as txs
from ledger.genesis import Genesis


class Client:
    """One node's API. `identity` and `key` sign every request (anonymous without them);
    `genesis` gives the chain id and the TLS trust, and is what proofs are verified against.

        with Client("https://127.0.0.1:7001", identity="fiscal-clerk", key=key,
                    genesis=genesis) as node:
            status = node.submit(node.build("fiscal/budget/2027", "record", {"amount": 1}),
                                 wait=True)
    """

    def __init__(
        self, url: str, *, identity: str | None = None, key: Ed25519PrivateKey | None = None,
        genesis: Genesis | None = None, timeout_s: float = TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY, signer: Signer | None = None,
    ) -> None:  # fmt: skip
        if signer is None and (identity is None) != (key is None):
            raise ClientError("identity and key go together")
        if signer is None and identity is not None and key is not None:
            signer = Signer(identity, key, None if genesis is None else genesis.chain_id)
        self.genesis = genesis
        self.retry = retry
        self.transport = NodeClient(url, timeout_s, signer, genesis=genesis)

    @property
    def url(self) -> str:
        return self.transport.url

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def get(self, path: str, *, expect: tuple[str, ...] = (), binary: bool = False) -> Any:
        """The decoded answer to GET `path` (JSON, or msgpack with `binary`): the escape hatch
        for a route without a method here."""
        return self.transport.get(path, expect=expect, binary=binary)

    # --- identity and transactions -----------------------------------------------------------

    @property
    def chain_id(self) -> str:
        """The chain id: the genesis', else asked of the node once (anonymously)."""
        signer = self.transport.signer
        if signer is not None and signer.chain_id is not None:
            return signer.chain_id
        if self.genesis is not None:
            return self.genesis.chain_id
        answer = self.transport.get(CHAIN_ID_PATH, expect=("chain_id",))
        if signer is not None:
            signer.chain_id = str(answer["chain_id"])
        return str(answer["chain_id"])

    def build(
        self, record_key: str, record_type: str, body: Mapping[str, Any], *,
        nonce: int | None = None, timestamp_ms: int | None = None,
    ) -> txs.Transaction:  # fmt: skip
        """A record signed with this client's identity (raises `InvalidTransaction` for a bad
        key, type or body, before anything is sent)."""
        signer = self.transport.signer
        if signer is None:
            raise ClientError("signing a record needs an identity and its key")
        _ = self.chain_id  # learnt before signing
        return core.build_tx(
            signer, record_key, record_type, body, nonce=nonce, timestamp_ms=timestamp_ms
        )

    def submit(
        self, tx: txs.Transaction, *, wait: bool = False, timeout_s: float = core.WAIT_TIMEOUT_S
    ) -> TxStatus:
        """Send `tx` under the retry rule; with `wait`, return once it is committed (else raise
        `NotCommitted` at the timeout). A 409 `duplicate` (already pending or committed) is
        success: the tx's status is returned."""
        deadline = time.monotonic() + timeout_s
        path = "/v1/transactions" + ("?wait=true" if wait else "")
        for attempt in range(1, self.retry.attempts + 1):
            try:
                answer = self.transport.post(
                    path, core.submission(tx), expect=core.STATUS_FIELDS, timeout_s=timeout_s
                )
                status = TxStatus.of(answer.value)
                break
            except Refused as exc:
                if core.is_duplicate(exc):
                    status = self.status(tx.tx_id.hex())
                    break
                if not core.is_retryable(exc) or attempt == self.retry.attempts:
                    raise
                time.sleep(self.retry.pause_s(attempt, core.retry_after(exc)))
            except ClientError as exc:
                if not core.is_retryable(exc) or attempt == self.retry.attempts:
                    raise
                time.sleep(self.retry.pause_s(attempt, None))
        if wait and not status.committed:
            return self.wait(status.tx_id, max(0.0, deadline - time.monotonic()))
        return status

    def status(self, tx_id: str) -> TxStatus:
        """A tx's status; `Refused` (404 `not_found`) if the node knows no such tx."""
        return TxStatus.of(
            self.transport.get(f"/v1/transactions/{tx_id}", expect=core.STATUS_FIELDS)
        )

    def transaction(self, tx_id: str) -> dict[str, Any]:
        """The tx lookup answer: status and, once committed, the tx itself (`tx`)."""
        value: dict[str, Any] = self.transport.get(
            f"/v1/transactions/{tx_id}", expect=core.STATUS_FIELDS
        )
        return value

    def wait(self, tx_id: str, timeout_s: float = core.WAIT_TIMEOUT_S) -> TxStatus:
        """Poll the tx's status until it is committed; `NotCommitted` when it expired or the
        timeout passed (a pending tx may still commit later)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(tx_id)
            if status.committed:
                return status
            if status.status == "expired" or time.monotonic() >= deadline:
                raise NotCommitted(tx_id, status.status, _not_committed(tx_id, status.status))
            time.sleep(min(core.WAIT_POLL_S, max(0.0, deadline - time.monotonic())))

    # --- reads -------------------------------------------------------------------------------

    def record(self, key: str) -> dict[str, Any]:
        """The current version of a record."""
        value: dict[str, Any] = self.transport.get(
            "/v1/records/" + path_of(key), expect=core.RECORD_FIELDS
        )
        return value

    def history_page(
        self, key: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of a record's versions, oldest first (`next_cursor` names the next)."""
        value: dict[str, Any] = self.transport.get(
            "/v1/history/" + path_of(key) + core.query(cursor=cursor, limit=limit),
            expect=core.HISTORY_FIELDS,
        )
        return value

    def history(self, key: str) -> Iterator[dict[str, Any]]:
        """Every version of a record, oldest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.history_page(key, cursor=cursor)
            yield from page["versions"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def query_page(
        self, prefix: str = "", record_type: str | None = None, *, cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One page of the current records whose key starts with `prefix` (and of that type),
        in key order: `{"records", "next_cursor"}` (`next_cursor` None on the last page)."""
        value: dict[str, Any] = self.transport.get(
            "/v1/records" + core.records_query(prefix, record_type, cursor, limit),
            expect=core.QUERY_FIELDS,
        )
        return value

    def query(self, prefix: str = "", record_type: str | None = None) -> Iterator[dict[str, Any]]:
        """Every current record whose key starts with `prefix`, page after page."""
        cursor: str | None = None
        while True:
            page = self.query_page(prefix, record_type, cursor=cursor)
            yield from page["records"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def events(
        self, *, from_height: int | None = None, prefix: str = "", last_id: str | None = None
    ) -> Iterator[Event]:
        """The chain's events as they commit (blocks, and the txs this identity may read),
        from block `from_height` (default: the next) or after the event `last_id`; reconnects
        with the last id it saw whenever a stream ends (cli/client/events.py), so nothing is
        missed or seen twice. Endless: stop iterating to stop."""
        subscription = Subscription(
            self.url, from_height=from_height, prefix=prefix, last_id=last_id
        )
        while True:
            lines = self.transport.stream_lines(subscription.path(), subscription.headers())
            try:
                for event in parse(lines):
                    if not subscription.take(event):
                        break
                    yield event
            except NodeUnreachable:
                pass
            finally:
                lines.close()
            subscription.ended()
            time.sleep(RECONNECT_PAUSE_S)

    def block(self, height: int | str = "latest") -> dict[str, Any]:
        """A certified block (validators and auditors only)."""
        value: dict[str, Any] = self.transport.get(f"/v1/blocks/{height}", expect=core.BLOCK_FIELDS)
        return value

    def chain(self, start: int, end: int | None = None) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The node's head height and the exact bytes of certified blocks `start..end` (as
        many as one answer holds), each (block, certificate); validators and auditors only."""
        value = self.transport.get(
            "/v1/chain" + core.query(**{"from": start, "to": end}),
            expect=core.CHAIN_FIELDS, binary=True,
        )  # fmt: skip
        return core.chain_pairs(value, start)

    def node_status(self) -> dict[str, Any]:
        value: dict[str, Any] = self.transport.get("/v1/status", expect=("node_id", "height"))
        return value

    # --- proofs ------------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """The node's certified head (docs/protocol.md 14.2)."""
        value: dict[str, Any] = self.transport.get("/v1/checkpoint", expect=core.CHECKPOINT_FIELDS)
        return value

    def stable_checkpoint(self) -> tuple[int, bytes]:
        """The last stable checkpoint, its q signed votes checked against the validator set of
        its block, proven from the genesis (cli/client/trust.py)."""
        doc = self.transport.get("/v1/checkpoint/stable", expect=core.STABLE_FIELDS)
        height = core.stable_height(doc)
        members = trust.members_of_block(
            self.url, self._genesis(), self.transport.timeout_s, height
        )
        return core.verify_stable_checkpoint(doc, members)

    def proof(self, tx_id: str) -> dict[str, Any]:
        """The proof bundle of a committed tx, as the node sent it (not yet verified)."""
        value: dict[str, Any] = self.transport.get(
            f"/v1/transactions/{tx_id}/proof", expect=("format", "tx_id")
        )
        return value

    def verify_proof(self, bundle: Mapping[str, Any]) -> proofs.Proven:
        """Verify a bundle against the genesis alone (raises `ledger.proofs.InvalidProof`)."""
        return proofs.verify_bundle(dict(bundle), self._genesis())

    def prove(self, tx_id: str) -> proofs.Proven:
        """Fetch the tx's proof bundle and verify it against the genesis."""
        return self.verify_proof(self.proof(tx_id))

    def _genesis(self) -> Genesis:
        if self.genesis is None:
            raise ClientError("verifying needs the genesis of the chain")
        return self.genesis


def _not_committed(tx_id: str, status: str) -> str:
    if status == "expired":
        return f"tx {tx_id} expired unproposed: sign it anew (a new nonce) to try again"
    return f"tx {tx_id} is {status}, not committed yet; ask again later (`cityledger tx {tx_id}`)"
