"""The rule-state side of a block's batch, and the reads of risk alerts, for `ledger.store`.

A block's batch gets, besides its block entries: the rule state its accepted txs wrote and the
risk state its alerts wrote (`S` + state key -> encode(value)), the reason code of each refused
tx (`O` + tx id), and its alerts (`A` + height(8) + index(2) -> encode([kind, evidence tx ids,
detail])). Risk monitoring runs here, after execution, over the same overlay of the batch.
Pure apart from the `get`/`items` functions the store hands in (no LevelDB here).
"""

from collections.abc import Callable
from typing import Final

from ledger.block import Block
from ledger.encoding import decode, encode
from ledger.errors import LedgerError, StoreError
from ledger.genesis import Genesis
from ledger.gov.history import config_of
from ledger.kinds.execute import Executed, Overlay
from ledger.kinds.risks import Alert, monitor
from ledger.storelayout import HEIGHT_BYTES, OUTCOME, STATE, height_bytes

ALERT: Final = b"A"
ALERT_INDEX_BYTES: Final = 2  # a block raises at most a few alerts per tx: 65 535 is ample
ALERT_BYTES_MAX: Final = 64 * 1024
ALERTS_MAX: Final = 1000  # alerts in one answer of `alerts`

Items = Callable[[bytes, bytes | None, int], list[tuple[bytes, bytes]]]
"""``items(prefix, start, limit)``: stored entries under `prefix`, from key `start` on."""


def block_rules(
    state: Overlay, block: Block, executed: Executed, genesis: Genesis
) -> tuple[dict[bytes, bytes], list[Alert]]:
    """The entries a block adds besides its block entries (and its alerts), with `state` (the
    batch's overlay, with the block's execution writes in) advanced by the risk writes."""
    config = config_of(state.get, genesis)  # before the block's writes: the one it ran under
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


def alerts(items: Items, first_height: int, limit: int, kind: str | None = None) -> list[Alert]:
    """Up to `limit` stored alerts from `first_height` on (of `kind` only, if given), in
    height order."""
    assert 1 <= limit <= ALERTS_MAX
    out: list[Alert] = []
    start = ALERT + height_bytes(first_height)
    while len(out) < limit:
        found = items(ALERT, start, ALERTS_MAX)
        for key, value in found:
            alert = _decode(key, value)
            if kind is None or alert.kind == kind:
                out.append(alert)
                if len(out) == limit:
                    break
        if len(found) < ALERTS_MAX:
            break
        start = found[-1][0] + b"\x00"
    return out


def _decode(key: bytes, value: bytes) -> Alert:
    try:
        kind, evidence, detail = decode(value, ALERT_BYTES_MAX)
        height = int.from_bytes(key[len(ALERT) : len(ALERT) + HEIGHT_BYTES], "big")
        return Alert(str(kind), tuple(bytes(e) for e in evidence), height, str(detail))
    except (LedgerError, ValueError, TypeError) as exc:
        raise StoreError(f"the alert entry {key!r} is damaged: {exc}") from None


def block_alerts(items: Items, height: int) -> list[Alert]:
    """The alerts stored for block `height`, in the order its txs raised them (for verifiers
    to compare, and for the event stream)."""
    prefix = ALERT + height_bytes(height)
    return [_decode(k, v) for k, v in items(prefix, None, ALERTS_MAX)]
