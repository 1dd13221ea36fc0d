"""What the synchronous and the asyncio client share: typed answers, tx building, the retry rule.

No I/O here: `Client` (cli/client/sync.py) and `AsyncClient` (cli/client/aio.py) do the
requests and call these functions on what they send and receive, so the two behave alike.

The retry rule of a submission (docs/client.md):
- a tx is signed once; every retry sends the same bytes, so the same tx id: at most one copy
  can ever be committed, whatever the network does;
- 409 `duplicate` means the node already holds the tx (pending) or committed it: for a retry
  that is success, and the client returns the tx's status instead of an error;
- 429 and 503 (pool full, busy) and a lost connection are retried after a bounded back-off
  (the node's `Retry-After` when it sent one), at most `RetryPolicy.attempts` sends in all;
- every other refusal is final: the same bytes would be refused again.
"""

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.client.errors import NodeUnreachable, Refused
from ledger import crypto
from ledger import tx as txs
from ledger.encoding import encode
from ledger.genesis import Genesis

STATUS_FIELDS: Final = ("tx_id", "status", "height", "index")  # DESIGN.md: a tx status
BLOCK_FIELDS: Final = ("height", "hash", "header", "txs", "certificate")
RECORD_FIELDS: Final = ("key", "type", "value", "tx_id", "height", "index")
HISTORY_FIELDS: Final = ("key", "versions")
QUERY_FIELDS: Final = ("records", "next_cursor")
CHAIN_FIELDS: Final = ("head", "blocks")
CHECKPOINT_FIELDS: Final = ("height", "block_hash", "history_root", "header", "certificate")
STABLE_FIELDS: Final = ("height", "block_hash", "votes")
WAIT_TIMEOUT_S: Final = 60.0
WAIT_POLL_S: Final = 0.2  # between two status reads while waiting for a commit
RETRY_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a submission is retried (see the module's rule)."""

    attempts: int = 5  # sends in all, the first included
    backoff_s: float = 0.25  # the first pause; doubles after each retry
    backoff_s_max: float = 5.0  # no pause is longer, whatever Retry-After says

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.backoff_s_max < self.backoff_s:
            raise ValueError("a retry policy makes at least one attempt, with pauses >= 0")

    def pause_s(self, attempt: int, retry_after: str | None) -> float:
        """The pause before send number `attempt + 1` (attempt counts from 1)."""
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), self.backoff_s_max)
        return min(self.backoff_s * 2.0 ** (attempt - 1), self.backoff_s_max)


DEFAULT_RETRY: Final = RetryPolicy()
NO_RETRY: Final = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class TxStatus:
    """A tx's status as the node reports it: `status` is pending | committed | expired;
    `height` and `index` are set once committed; `outcome` and `reason` when the node reports
    a rule's verdict (accepted, or refused with a reason code)."""

    tx_id: str
    status: str
    height: int | None = None
    index: int | None = None
    outcome: str | None = None
    reason: str | None = None

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> "TxStatus":
        def opt_int(name: str) -> int | None:
            item = value.get(name)
            return item if isinstance(item, int) and not isinstance(item, bool) else None

        def opt_str(name: str) -> str | None:
            item = value.get(name)
            return item if isinstance(item, str) else None

        tx_id = value["tx_id"]
        return cls(
            tx_id=tx_id.hex() if isinstance(tx_id, bytes) else str(tx_id),
            status=str(value["status"]),
            height=opt_int("height"),
            index=opt_int("index"),
            outcome=opt_str("outcome"),
            reason=opt_str("reason") if value.get("status") == "committed" else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "tx_id": self.tx_id, "status": self.status, "height": self.height,
            "index": self.index, "outcome": self.outcome, "reason": self.reason,
        }  # fmt: skip


@dataclass
class Signer:
    """The identity every request is signed with: a client's (or a validator's) id and key.
    Without a chain id (no genesis at hand) the client asks the node for it once."""

    identity: str
    key: Ed25519PrivateKey
    chain_id: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"Signer(identity={self.identity!r}, chain_id={self.chain_id!r})"


def build_tx(
    signer: Signer, record_key: str, record_type: str, body: Mapping[str, Any], *,
    nonce: int | None = None, timestamp_ms: int | None = None,
) -> txs.Transaction:  # fmt: skip
    """A record signed by `signer` (whose chain id must be known): a random 64-bit nonce and
    this machine's clock unless given. Raises `InvalidTransaction` for a bad key, type or
    body, before anything is sent."""
    assert signer.chain_id is not None, "learn the chain id first (Client.chain_id)"
    return txs.create(
        signer.key,
        chain_id=signer.chain_id,
        client_id=signer.identity,
        nonce=secrets.randbits(64) if nonce is None else nonce,
        timestamp_ms=time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms,
        key=record_key,
        type_=record_type,
        body=dict(body),
    )


def submission(tx: txs.Transaction) -> dict[str, str]:
    """The JSON body that submits `tx`: its canonical bytes, as hex."""
    return {"raw": tx.raw.hex()}


def is_duplicate(exc: Refused) -> bool:
    """A refusal that means "already pending or committed": success for a retry."""
    return exc.status == 409 and exc.code == txs.DUPLICATE


def is_retryable(exc: Exception) -> bool:
    return isinstance(exc, NodeUnreachable) or (
        isinstance(exc, Refused) and exc.status in RETRY_STATUSES
    )


def retry_after(exc: Exception) -> str | None:
    return exc.retry_after if isinstance(exc, Refused) else None


def status_of_submission(value: Mapping[str, Any]) -> TxStatus:
    """The status of a single tx's submission answer (200 or 202)."""
    return TxStatus.of(value)


def query(**params: object) -> str:
    """`?a=1&b=x` of the params that are not None (values are digits or node-made cursors)."""
    pairs = [f"{name}={quote(str(value), safe='')}" for name, value in params.items()
             if value is not None]  # fmt: skip
    return "?" + "&".join(pairs) if pairs else ""


def records_query(
    prefix: str, record_type: str | None, cursor: str | None, limit: int | None
) -> str:
    """The query string of `GET /v1/records` (an empty prefix: every record one may read)."""
    return query(prefix=prefix or None, type=record_type, cursor=cursor, limit=limit)


def chain_pairs(value: Mapping[str, Any], start: int) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The head and (block, certificate) bytes of a `GET /v1/chain` answer in msgpack, checked
    to be consecutive heights from `start` (their content is for a verifier to check)."""
    head, blocks = value["head"], value["blocks"]
    if not isinstance(head, int) or not isinstance(blocks, list):
        raise NodeUnreachable("the node's /v1/chain answer is not a chain page")
    pairs: list[tuple[bytes, bytes]] = []
    for offset, item in enumerate(blocks):
        block, cert = item.get("block"), item.get("certificate")
        if (
            item.get("height") != start + offset
            or not isinstance(block, bytes)
            or not isinstance(cert, bytes)
        ):
            raise NodeUnreachable("the node's /v1/chain answer skips a height or is not bytes")
        pairs.append((block, cert))
    return head, pairs


def stable_height(doc: Mapping[str, Any]) -> int:
    """The height a `GET /v1/checkpoint/stable` answer claims (checked, not yet verified)."""
    height = doc["height"]
    if isinstance(height, bool) or not isinstance(height, int) or height < 1:
        raise ValueError("not a stable checkpoint: bad height")
    return height


def verify_stable_checkpoint(doc: Mapping[str, Any], members: Genesis) -> tuple[int, bytes]:
    """Check `GET /v1/checkpoint/stable` against `members`, the validator set of the
    checkpoint's block (the configuration in force before it, docs/protocol.md 20.8; the
    genesis while governance changed no validator): q valid Checkpoint signatures of distinct
    validators over `Domain.CHECKPOINT || encode([chain_id, height, block_hash])`.
    Returns (height, block hash); raises ValueError with the reason otherwise."""
    height, block_hash = stable_height(doc), doc["block_hash"]
    digest = bytes.fromhex(block_hash) if isinstance(block_hash, str) else bytes(block_hash)
    if len(digest) != 32:
        raise ValueError("not a stable checkpoint: bad block hash")
    payload = encode([members.chain_id, height, digest])
    signers: set[int] = set()
    for vote in doc["votes"]:
        index, sig = vote["validator"], vote["signature"]
        signature = bytes.fromhex(sig) if isinstance(sig, str) else bytes(sig)
        if not (isinstance(index, int) and 0 <= index < len(members.validators)):
            raise ValueError(f"vote of an unknown validator {index!r}")
        key = crypto.load_public_key(members.validators[index].public_key)
        if index in signers or not crypto.verify(key, crypto.Domain.CHECKPOINT, payload, signature):
            raise ValueError(f"the vote of validator {index} is not a valid checkpoint signature")
        signers.add(index)
    if len(signers) < members.quorums.commit:
        raise ValueError(
            f"{len(signers)} votes: a stable checkpoint needs {members.quorums.commit}"
        )
    return height, digest
