"""Admission: which submitted transactions may enter this node's pool.

A tx is admitted when it decodes, is for this chain, comes from a genesis client writing inside
its organisation's namespaces, is stamped within [now - ttl, now + skew], is new (not committed,
not pending, not twice in one request, not being admitted by a concurrent request) and carries
a valid client signature. The rules and their order are node/ordering.py's, which the simulator
runs too; the admitted txs come out as an `Admitted` that only the shell's `submit` takes, and
stay known to every other admission until then. The Ed25519 verifications (the node's CPU hot
spot) run last, in chunks on a thread pool (cryptography releases the GIL while verifying), so
a large batch never holds the event loop for long. Without a pool (a node with one core,
`cores = 1`: there, the threads' hand-offs cost more CPU than they save) the event loop
verifies a slice at a time and serves other work in between. Txs relayed by peers go through
the very same rules: a peer is never trusted.

A client's own submission (not a relayed tx, nor a block's) may also carry a `precheck`:
the record rules whose refusal is already certain against the committed state
(`ledger.kinds.execute.settled_refusal`), so that a clerk hears the reason code at once
instead of finding the tx refused in its block. A peer's txs never meet it: a block holding
such a tx is valid (the tx is recorded, refused).

This module decides and reports; it never hands txs to the replica or writes anything.
"""

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final

from ledger import tx as txs
from ledger.errors import InvalidTransaction
from ledger.genesis import Admin, Client, Genesis
from ledger.gov.config import Config as GovConfig
from node.ordering import Admitted, Gate, check_cheap, verify_signatures

Precheck = Callable[[txs.Transaction, Client | Admin], InvalidTransaction | None]
"""``precheck(tx, client)``: the certain refusal of a client's tx by a record rule, or None."""

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
    admitted: Admitted  # for `Shell.submit`, the only way to the replica
    rejected: tuple[Rejection, ...]

    @property
    def accepted(self) -> tuple[txs.Transaction, ...]:
        return self.admitted.txs

    @property
    def accepted_at(self) -> tuple[int, ...]:
        """The request index of each accepted tx."""
        return self.admitted.at


class Admission:
    def __init__(
        self,
        genesis: Genesis,
        *,
        gate: Gate,
        is_committed: Callable[[bytes], bool],
        is_pending: Callable[[bytes], bool],
        executor: Executor | None,
        configuration: Callable[[], GovConfig] | None = None,
    ) -> None:
        self._genesis = genesis
        # The configuration in force (ledger/gov), read at every admission: who may sign.
        self._configuration = configuration or (lambda: GovConfig(genesis))
        self._gate = gate  # shared with the shell, which submits what it admitted
        self._is_committed = is_committed
        self._is_pending = is_pending
        self._executor = executor
        # Claims whose signatures are being verified, each with a future done when it ends.
        self._verifying: dict[int, asyncio.Future[None]] = {}

    def is_known(self, tx_id: bytes) -> bool:
        """Pending here or being admitted (no store read: `admit` checks the store itself)."""
        return self._gate.is_held(tx_id) or self._is_pending(tx_id)

    async def settled(self, tx_ids: Iterable[bytes]) -> None:
        """Return once no concurrent admit() is verifying any of `tx_ids` (so a tx is either
        pooled, rejected, or new by then): no signature is checked twice."""
        claims = {self._gate.claim_of(tx_id) for tx_id in tx_ids}
        waiting = {self._verifying[c] for c in claims if c in self._verifying}
        if waiting:
            await asyncio.wait(waiting)

    def in_flight_tx(self, tx_id: bytes) -> txs.Transaction | None:
        """A tx being admitted (decoded, signature maybe not checked yet): lets a block decode
        reuse it (`ledger.tx.decode_known` reuses only txs decoded from the same bytes)."""
        return self._gate.held(tx_id)

    async def admit(
        self, items: Sequence[bytes | txs.Transaction | InvalidTransaction], now_ms: int,
        precheck: Precheck | None = None,
    ) -> Verdict:  # fmt: skip
        """Check every item in the rule order of node/ordering.py. The admitted txs stay held
        by the gate (known to every other admission) until the shell submits them."""
        rejected: list[Rejection] = []
        candidates: list[tuple[int, txs.Transaction, Client | Admin]] = []
        seen: set[bytes] = set()
        config = self._configuration()
        for index, item in enumerate(items):
            decoded: txs.Transaction | None = None  # named in a refusal once it decodes
            try:
                tx = decoded = item if isinstance(item, txs.Transaction) else self._decode(item)
                client = check_cheap(
                    tx, self._genesis, now_ms, seen=seen,
                    is_committed=self._is_committed, is_known=self.is_known, config=config,
                )  # fmt: skip
                refused = None if precheck is None else precheck(tx, client)
                if refused is not None:
                    raise refused
            except InvalidTransaction as exc:
                tx_id = None if decoded is None else decoded.tx_id
                rejected.append(Rejection(index, tx_id, exc.reason, exc.detail))
                continue
            seen.add(tx.tx_id)
            candidates.append((index, tx, client))
        claim = self._gate.claim([tx for _, tx, _ in candidates])
        done = asyncio.get_running_loop().create_future()
        self._verifying[claim.number] = done
        valid: list[bool] = [False] * len(candidates)  # if verifying fails: release them all
        try:
            valid = await self._verify([(tx, client) for _, tx, client in candidates])
        finally:
            keep = [
                ok and not self._is_committed(tx.tx_id) and not self._is_pending(tx.tx_id)
                for (_, tx, _), ok in zip(candidates, valid, strict=True)
            ]  # committed or pooled (from a peer's block) while we verified: not new any more
            admitted = self._gate.admit(claim, keep, [index for index, _, _ in candidates])
            del self._verifying[claim.number]
            done.set_result(None)
        for (index, tx, _), ok, kept in zip(candidates, valid, keep, strict=True):
            if not ok:
                detail = "signature does not match the client's key"
                rejected.append(Rejection(index, tx.tx_id, txs.BAD_SIGNATURE, detail))
            elif not kept:
                rejected.append(Rejection(index, tx.tx_id, txs.DUPLICATE, "already known"))
        rejected.sort(key=lambda r: r.index)
        return Verdict(admitted, tuple(rejected))

    @staticmethod
    def _decode(item: bytes | InvalidTransaction) -> txs.Transaction:
        if isinstance(item, InvalidTransaction):
            raise item
        return txs.decode_tx(item)

    async def _verify(self, pairs: list[tuple[txs.Transaction, Client | Admin]]) -> list[bool]:
        if len(pairs) < INLINE_VERIFY_TXS_MAX:
            return verify_signatures(pairs)
        if self._executor is None:
            # On the event loop, a slice at a time: votes and requests go on in between.
            out: list[bool] = []
            for i in range(0, len(pairs), LOOP_VERIFY_TXS):
                if i:
                    await asyncio.sleep(0)
                out.extend(verify_signatures(pairs[i : i + LOOP_VERIFY_TXS]))
            return out
        loop = asyncio.get_running_loop()
        chunks = [pairs[i : i + VERIFY_CHUNK_TXS] for i in range(0, len(pairs), VERIFY_CHUNK_TXS)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, verify_signatures, c) for c in chunks)
        )
        return [ok for chunk in results for ok in chunk]
