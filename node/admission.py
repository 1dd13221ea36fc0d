"""Admission: which submitted transactions may enter this node's pool.

A tx is admitted when it decodes, is for this chain, comes from a genesis client writing inside
its organisation's namespaces, is stamped within [now - ttl, now + skew], is new (not committed,
not pending, not twice in one request, not being admitted by a concurrent request) and carries
a valid client signature. Cheap checks go first; the Ed25519 verifications (the node's CPU hot
spot) run last, in chunks on a thread pool (cryptography releases the GIL while verifying), so
a large batch never holds the event loop for long. Without a pool (a node with one core,
`cores = 1`: there, the threads' hand-offs cost more CPU than they save) the event loop
verifies a slice at a time and serves other work in between. Txs relayed by peers go through
the very same rules: a peer is never trusted.

This module decides and reports; it never hands txs to the replica or writes anything.
"""

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final

from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Client, Genesis

VERIFY_CHUNK_TXS: Final = 128  # txs verified per thread-pool job (fewer, larger jobs: each costs)
INLINE_VERIFY_TXS_MAX: Final = 8  # fewer than this: not worth a thread hop
# Without a pool, the event loop checks this many signatures (~3 ms) before it serves other work.
LOOP_VERIFY_TXS: Final = 32


@dataclass(frozen=True)
class Rejection:
    """Why the tx at `index` of a request was not admitted (`tx_id` None if it did not decode)."""

    index: int
    tx_id: bytes | None
    reason: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    accepted: tuple[txs.Transaction, ...]
    accepted_at: tuple[int, ...]  # the request index of each accepted tx
    rejected: tuple[Rejection, ...]


def _verify_chunk(chunk: Sequence[tuple[txs.Transaction, Client]]) -> list[bool]:
    out = []
    for tx, client in chunk:
        try:
            txs.check_signature(tx, client)
            out.append(True)
        except InvalidTransaction:
            out.append(False)
    return out


class Admission:
    def __init__(
        self,
        genesis: Genesis,
        *,
        is_committed: Callable[[bytes], bool],
        is_pending: Callable[[bytes], bool],
        executor: Executor | None,
    ) -> None:
        self._genesis = genesis
        self._is_committed = is_committed
        self._is_pending = is_pending
        self._executor = executor
        # Txs being verified by a concurrent admit(), each with a future that is done once that
        # admit() has returned (and its caller has handed the accepted txs on).
        self._in_flight: dict[bytes, tuple[asyncio.Future[None], txs.Transaction]] = {}

    def is_known(self, tx_id: bytes) -> bool:
        """Pending here or being admitted (no store read: `admit` checks the store itself)."""
        return tx_id in self._in_flight or self._is_pending(tx_id)

    def is_new(self, tx_id: bytes) -> bool:
        return not (
            tx_id in self._in_flight or self._is_pending(tx_id) or self._is_committed(tx_id)
        )

    async def settled(self, tx_ids: Iterable[bytes]) -> None:
        """Return once no concurrent admit() is verifying any of `tx_ids` (so a tx is either
        pooled, rejected, or new by then): no signature is checked twice."""
        waiting = {entry[0] for entry in map(self._in_flight.get, tx_ids) if entry is not None}
        if waiting:
            await asyncio.wait(waiting)

    def in_flight_tx(self, tx_id: bytes) -> txs.Transaction | None:
        """A tx being admitted (decoded, signature not checked yet): lets a block decode
        reuse it (`ledger.tx.decode_known` reuses only txs decoded from the same bytes)."""
        entry = self._in_flight.get(tx_id)
        return None if entry is None else entry[1]

    async def admit(
        self, items: Sequence[bytes | txs.Transaction | InvalidTransaction], now_ms: int
    ) -> Verdict:
        """Check every item; the accepted txs must be handed on before the caller awaits
        anything else (their ids stop counting as in flight when this returns)."""
        rejected: list[Rejection] = []
        candidates: list[tuple[int, txs.Transaction, Client]] = []
        seen: set[bytes] = set()
        for index, item in enumerate(items):
            try:
                tx = item if isinstance(item, txs.Transaction) else self._decode(item)
                client = self._check_cheap(tx, now_ms, seen)
            except InvalidTransaction as exc:
                tx_id = item.tx_id if isinstance(item, txs.Transaction) else None
                rejected.append(Rejection(index, tx_id, exc.reason, exc.detail))
                continue
            seen.add(tx.tx_id)
            candidates.append((index, tx, client))
        ids = [tx.tx_id for _, tx, _ in candidates]
        done = asyncio.get_running_loop().create_future()
        self._in_flight.update((tx.tx_id, (done, tx)) for _, tx, _ in candidates)
        try:
            valid = await self._verify([(tx, client) for _, tx, client in candidates])
        finally:
            for tx_id in ids:
                del self._in_flight[tx_id]
            done.set_result(None)  # waiters run after our caller has handed the txs on
        accepted, accepted_at = [], []
        for (index, tx, _), ok in zip(candidates, valid, strict=True):
            if not ok:
                detail = "signature does not match the client's key"
                rejected.append(Rejection(index, tx.tx_id, txs.BAD_SIGNATURE, detail))
            elif not self.is_new(tx.tx_id):  # committed or pooled while we verified
                rejected.append(Rejection(index, tx.tx_id, txs.DUPLICATE, "already known"))
            else:
                accepted.append(tx)
                accepted_at.append(index)
        rejected.sort(key=lambda r: r.index)
        return Verdict(tuple(accepted), tuple(accepted_at), tuple(rejected))

    @staticmethod
    def _decode(item: bytes | InvalidTransaction) -> txs.Transaction:
        if isinstance(item, InvalidTransaction):
            raise item
        return txs.decode_tx(item)

    def _check_cheap(self, tx: txs.Transaction, now_ms: int, seen: set[bytes]) -> Client:
        client = txs.check_stateless(tx, self._genesis)
        txs.check_time(tx, self._genesis, now_ms)
        if tx.tx_id in seen:
            raise InvalidTransaction(txs.DUPLICATE, "the same tx twice in one request")
        if self._is_committed(tx.tx_id):
            raise InvalidTransaction(txs.DUPLICATE, "already committed")
        if tx.tx_id in self._in_flight or self._is_pending(tx.tx_id):
            raise InvalidTransaction(txs.DUPLICATE, "already pending")
        return client

    async def _verify(self, pairs: list[tuple[txs.Transaction, Client]]) -> list[bool]:
        if len(pairs) < INLINE_VERIFY_TXS_MAX:
            return _verify_chunk(pairs)
        if self._executor is None:
            # On the event loop, a slice at a time: votes and requests go on in between.
            out: list[bool] = []
            for i in range(0, len(pairs), LOOP_VERIFY_TXS):
                if i:
                    await asyncio.sleep(0)
                out.extend(_verify_chunk(pairs[i : i + LOOP_VERIFY_TXS]))
            return out
        loop = asyncio.get_running_loop()
        chunks = [pairs[i : i + VERIFY_CHUNK_TXS] for i in range(0, len(pairs), VERIFY_CHUNK_TXS)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, _verify_chunk, c) for c in chunks)
        )
        return [ok for chunk in results for ok in chunk]
