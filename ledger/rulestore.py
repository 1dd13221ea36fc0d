"""The rule-state side of the block store: a block's batch entries, and the reads of them.

A block's batch gets, besides its block entries: the rule state its accepted txs wrote and the
risk state its alerts wrote (`S` + state key -> encode(value)), the reason code of each refused
tx (`O` + tx id), and its alerts (`A` + height(8) + index(2) -> encode([kind, evidence tx ids,
detail])). Risk monitoring runs here, after execution, over the same overlay of the batch.
`block_rules` is pure; `RuleStateReads` reads these entries through the store's `Reader` and
keeps the decoded rule state it read or the store wrote last (every block's execution reads
the same few entries: budget lines, payees, a payee's recent payments), within a bound.
"""

import threading
from collections import OrderedDict
from typing import Any, Final

from ledger.block import Block
from ledger.encoding import decode, encode
from ledger.errors import LedgerError, StoreError
from ledger.genesis import Genesis
from ledger.gov.config import Config
from ledger.kinds.execute import Executed, Overlay
from ledger.kinds.risks import Alert, monitor
from ledger.leveldb import Reader
from ledger.storelayout import HEIGHT_BYTES, OUTCOME, STATE, after_prefix, height_bytes

ALERT: Final = b"A"
ALERT_INDEX_BYTES: Final = 2  # a block raises at most a few alerts per tx: 65 535 is ample
ALERT_BYTES_MAX: Final = 64 * 1024
ALERTS_MAX: Final = 1000  # alerts in one answer of `alerts`
STATE_VALUE_BYTES_MAX: Final = 64 * 1024  # one rule-state entry (a few fields)
# Decoded rule-state entries kept, counted by their encoded size (plus a few bytes per entry,
# absent ones included): a few blocks' worth of the entries a busy chain reads.
STATE_CACHE_BYTES_MAX: Final = 8 * 1024 * 1024
_ENTRY_BYTES: Final = 64  # what an entry counts besides its value: its key, the dict slot

StateWrites = dict[bytes, tuple[Any, int]]
"""Rule-state writes of a batch: state key -> (value, bytes of its encoding)."""


def block_rules(
    state: Overlay, block: Block, executed: Executed, genesis: Genesis, config: Config
) -> tuple[dict[bytes, bytes], list[Alert]]:
    """The entries a block adds besides its block entries (and its alerts), with `state` (the
    batch's overlay, with the block's execution writes in) advanced by the risk writes;
    `config`: the configuration the block ran under (in force before it)."""
    state.update(executed.writes)
    m = config.members
    signers = [*m.clients.values(), *m.admins.values(), *config.retired.values()]
    organisation_of = {s.id: s.organisation for s in signers}
    pairs = zip(block.txs, block.outcomes, strict=True)
    alerts, risk = monitor(
        state, block.height, block.header.timestamp_ms, pairs, organisation_of, genesis.rules
    )
    state.update(risk)
    entries = {STATE + k: encode(v) for k, v in {**executed.writes, **risk}.items()}
    for t, code in zip(block.txs, block.outcomes, strict=True):
        if code:
            entries[OUTCOME + t.tx_id] = code.encode()
    assert len(alerts) < 2 ** (8 * ALERT_INDEX_BYTES)
    for index, alert in enumerate(alerts):
        entries[_alert_key(block.height, index)] = encode(alert.to_list())
    return entries, alerts


def _alert_key(height: int, index: int) -> bytes:
    return ALERT + height_bytes(height) + index.to_bytes(ALERT_INDEX_BYTES, "big")


class RuleStateReads:
    """The committed rule state, outcomes and alerts of one store. Decoded rule-state entries
    are kept (absent ones too) up to STATE_CACHE_BYTES_MAX, and `written` updates them with a
    batch's writes once the store's head includes it. Values are shared, never to be changed
    in place (rules return new values; ledger/kinds/base.py). Reads may come from other
    threads than the writer's: a read that raced a write keeps nothing (`_generation`)."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        # key -> (value, bytes counted), oldest kept first. An OrderedDict: a plain dict that
        # drops its first entries over and over makes `next(iter(...))` pass over every slot
        # freed before it (a fifth of a fiscal block's commit in a profile).
        self._cache: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._cached_bytes = 0
        self._generation = 0  # writes taken in so far
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Any:
        """The committed value of rule-state entry `key` (ledger/kinds), or None."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        generation = self._generation
        raw = self._reader.get(STATE + key)
        value = None if raw is None else self._decode_state(key, raw)
        with self._lock:
            if generation == self._generation:  # no write was taken in meanwhile
                self._keep(key, value, len(raw or b""))
        return value

    def written(self, writes: StateWrites) -> None:
        """Take in the rule-state writes of a batch that is on disk (before any later one)."""
        with self._lock:
            self._generation += 1
            cache, kept = self._cache, self._cached_bytes  # `_keep` inlined: a few per tx
            for key, (value, size) in writes.items():
                old = cache.pop(key, None)
                if old is not None:
                    kept -= old[1]
                counted = size + len(key) + _ENTRY_BYTES
                cache[key] = (value, counted)
                kept += counted
            while kept > STATE_CACHE_BYTES_MAX:  # the oldest kept go first
                kept -= cache.popitem(last=False)[1][1]
            self._cached_bytes = kept

    def _keep(self, key: bytes, value: Any, size: int) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old[1]
        counted = size + len(key) + _ENTRY_BYTES
        self._cache[key] = (value, counted)
        self._cached_bytes += counted
        while self._cached_bytes > STATE_CACHE_BYTES_MAX:  # the oldest kept go first
            self._cached_bytes -= self._cache.popitem(last=False)[1][1]

    def entries(self, prefix: bytes, limit: int) -> list[tuple[bytes, Any]]:
        """The first `limit` rule-state entries whose keys start with `prefix`, in key order."""
        items = self._reader.items(STATE + prefix, reverse=False, limit=limit)
        return [(k[1:], self._decode_state(k, v)) for k, v in items]

    def _decode_state(self, key: bytes, raw: bytes) -> Any:
        try:
            return decode(raw, STATE_VALUE_BYTES_MAX)
        except LedgerError:
            path = self._reader.path
            raise StoreError(f"{path}: the rule state entry {key!r} is damaged") from None

    def tx_outcome(self, tx_id: bytes) -> str:
        """The reason code of a committed tx that was refused; "" if it was accepted."""
        raw = self._reader.get(OUTCOME + tx_id)
        return "" if raw is None else raw.decode(errors="replace")

    def alerts(
        self, first_height: int, limit: int, kind: str | None = None,
        after: tuple[int, int] | None = None,
    ) -> list[tuple[int, Alert]]:  # fmt: skip
        """Up to `limit` stored alerts (of `kind` only, if given) with their index in their
        block, in (height, index) order: from `first_height` on, or after the alert at
        `after` (height, index) when given."""
        assert 1 <= limit <= ALERTS_MAX
        out: list[tuple[int, Alert]] = []
        start = (
            ALERT + height_bytes(first_height) if after is None else _alert_key(*after) + b"\x00"
        )
        while len(out) < limit:
            found = self._reader.scan(start, after_prefix(ALERT), ALERTS_MAX)
            for key, value in found:
                alert = _decode(key, value)
                if kind is None or alert.kind == kind:
                    out.append((_index(key), alert))
                    if len(out) == limit:
                        break
            if len(found) < ALERTS_MAX:
                break
            start = found[-1][0] + b"\x00"
        return out

    def block_alerts(self, height: int) -> list[Alert]:
        """The alerts stored for block `height`, in the order its txs raised them (for
        verifiers to compare, and for the event stream)."""
        prefix = ALERT + height_bytes(height)
        return [
            _decode(k, v) for k, v in self._reader.scan(prefix, after_prefix(prefix), ALERTS_MAX)
        ]


def _index(key: bytes) -> int:
    return int.from_bytes(key[len(ALERT) + HEIGHT_BYTES :], "big")


def _decode(key: bytes, value: bytes) -> Alert:
    try:
        kind, evidence, detail = decode(value, ALERT_BYTES_MAX)
        height = int.from_bytes(key[len(ALERT) : len(ALERT) + HEIGHT_BYTES], "big")
        return Alert(str(kind), tuple(bytes(e) for e in evidence), height, str(detail))
    except (LedgerError, ValueError, TypeError) as exc:
        raise StoreError(f"the alert entry {key!r} is damaged: {exc}") from None


def state_writes(state: Overlay, entries: dict[bytes, bytes]) -> StateWrites:
    """The rule-state writes among a block's `entries`, with their values as `state` (the
    batch's overlay, right after the block) holds them, for `RuleStateReads.written`."""
    writes = state.writes  # `block_rules` put every rule-state entry of the block there
    return {k[1:]: (writes[k[1:]], len(v)) for k, v in entries.items() if k[:1] == STATE}
