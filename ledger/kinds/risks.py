"""Risk monitoring: alerts that flag fund flows for a person and never refuse a tx.

Deterministic over the committed chain: `monitor` runs after a block's execution, over its
accepted txs in order, with the block's timestamp as the time, the genesis `[rules]`
thresholds, and a risk state of its own inside the rule state (so every node, and a verifier
replaying from genesis, raises the same alerts at the same heights). Each alert names its
evidence, the tx ids (each provable with a proof bundle):

- `split_payment`: payments to one payee inside `split_window_ms`, each under the approval
  threshold, that together reach it (raised by the payment that crosses it);
- `round_amount`: a payment at or above the threshold that is a multiple of
  `round_amount_cents`;
- `payee_velocity`: more than `velocity_max_payments` payments to one payee inside
  `velocity_window_ms` (raised once, by the payment that passes the bound);
- `near_duplicate_invoice`: a payee paid for an invoice whose number differs from one paid
  before only in case, punctuation, spaces or leading zeros of its numbers;
- `cross_insurer_claim`: one property and event claimed at two insurers;
- `benford_deviation`: a department's first digits of payment amounts, once it has
  `benford_min_payments`, deviate from Benford's law by a mean absolute deviation above
  `benford_mad_max_ppm` (raised when it first passes the bound, again after it came back).

The risk state is bounded: a payee's recent payments keep at most `RECENT_PAYMENTS_MAX`
entries and a few more (ledger/kinds/recent.py), evidence lists at most `EVIDENCE_MAX` tx ids.
Integer arithmetic only.
"""

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from ledger.genesis import RuleParams
from ledger.kinds import allocation, appropriation, claim, recent
from ledger.kinds.base import ACCEPTED, Writes, state_key
from ledger.tx import Transaction

SPLIT_PAYMENT: Final = "split_payment"
ROUND_AMOUNT: Final = "round_amount"
PAYEE_VELOCITY: Final = "payee_velocity"
NEAR_DUPLICATE_INVOICE: Final = "near_duplicate_invoice"
CROSS_INSURER_CLAIM: Final = "cross_insurer_claim"
BENFORD_DEVIATION: Final = "benford_deviation"
ALERT_KINDS: Final = (
    SPLIT_PAYMENT, ROUND_AMOUNT, PAYEE_VELOCITY, NEAR_DUPLICATE_INVOICE, CROSS_INSURER_CLAIM,
    BENFORD_DEVIATION,
)  # fmt: skip
EVIDENCE_MAX: Final = 32
# Benford's first-digit probabilities log10(1 + 1/d), d = 1..9, in parts per million.
BENFORD_PPM: Final = (301030, 176091, 124939, 96910, 79181, 66947, 57992, 51153, 45757)
_INVOICES: Final = b"rn"  # payee NUL normalised invoice -> [invoice, tx id]
_CLAIMS: Final = b"rc"  # property NUL event -> [[organisation, tx id], ...]
_DIGITS: Final = b"rb"  # department -> [payments, count of 1, ..., count of 9, flagged]
_NOT_ALNUM: Final = re.compile(r"[^0-9A-Za-z]")
_LEADING_ZEROS: Final = re.compile(r"(?<![0-9])0+(?=[0-9])")  # of a run of digits, bar its last
_MILLION: Final = 1_000_000
# The most one payment changes `_deviation`: its digit's term by up to 1e6, each other's by E_d.
_DEVIATION_STEP_MAX: Final = _MILLION + sum(BENFORD_PPM)


@dataclass(frozen=True)
class Alert:
    kind: str
    evidence: tuple[bytes, ...]  # tx ids, oldest first
    height: int
    detail: str

    def to_list(self) -> list[Any]:
        return [self.kind, list(self.evidence), self.detail]


class _View:
    """The state seen through this block's risk writes so far."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.writes: Writes = {}
        self.windows: dict[str, recent.Window] = {}  # of the payees this block paid
        # line key -> the state key of its department's digit counts, or None (no line):
        # fixed for life (a line keeps its appropriation, an appropriation its department).
        self.digits_keys: dict[str, bytes | None] = {}
        self.department_of: dict[bytes, str] = {}  # digit counts' key -> department
        # digit counts' key -> (up to which count, whether its deviation is above the bound)
        self.deviates: dict[bytes, tuple[int, bool]] = {}

    def get(self, key: bytes) -> Any:
        return self.writes[key] if key in self.writes else self.state.get(key)

    def digits_key(self, line_key: str) -> bytes | None:
        if line_key in self.digits_keys:
            return self.digits_keys[line_key]
        line = self.get(state_key(allocation.TABLE, line_key))
        source = self.get(state_key(appropriation.TABLE, line["appropriation"])) if line else None
        key = None
        if source is not None:
            key = state_key(_DIGITS, source["department"])
            self.department_of[key] = source["department"]
        self.digits_keys[line_key] = key
        return key


def monitor(
    state: Any, height: int, time_ms: int, accepted: Iterable[tuple[Transaction, str]],
    organisation_of: dict[str, str], params: RuleParams,
) -> tuple[list[Alert], Writes]:  # fmt: skip
    """The alerts of a block's txs and the risk state they write; `state` is the rule state
    after the block's execution, `accepted` its (tx, outcome) pairs in order."""
    view, alerts = _View(state), []
    for tx, code in accepted:
        if code != ACCEPTED:
            continue
        if tx.type == "budget.disbursement":
            alerts += _payment(view, tx, height, time_ms, params)
        elif tx.type == "insurance.claim":
            alerts += _claim(view, tx, height, organisation_of[tx.client_id])
    for window in view.windows.values():
        view.writes.update(window.writes())
    return alerts, view.writes


def _payment(
    view: _View, tx: Transaction, height: int, now: int, params: RuleParams
) -> list[Alert]:
    payee, cents, threshold = (
        tx.body["payee"],
        tx.body["amount_cents"],
        params.approval_threshold_cents,
    )
    window = view.windows.get(payee)
    if window is None:
        window = view.windows[payee] = recent.Window.load(view.get, payee)
    count, total = _record(window, [now, cents, tx.tx_id], now, params)
    entries, out = window.entries, []
    if cents < threshold:
        before = total - cents  # the small payments in the window before this one
        if count >= 2 and before < threshold <= total:
            inside = entries[window.since(now - params.split_window_ms) :]
            small = [p for p in inside if p[1] < threshold]
            out.append(_alert(SPLIT_PAYMENT, small, height, f"{count} payments to {payee}"))
    elif cents % params.round_amount_cents == 0:
        out.append(_alert(ROUND_AMOUNT, entries[-1:], height, f"{cents} cents to {payee}"))
    fast = len(entries) - window.since(now - params.velocity_window_ms)
    if fast == params.velocity_max_payments + 1:
        out.append(_alert(PAYEE_VELOCITY, entries[-fast:], height, f"{fast} payments to {payee}"))
    out += _invoice(view, tx, height)
    out += _benford(view, tx, height, params)
    return out


def _record(
    window: recent.Window, entry: list[Any], now: int, params: RuleParams
) -> tuple[int, int]:
    """Record `entry` (this payment) in its payee's window; the (count, sum of cents) of the
    window's payments under the approval threshold inside the split window.

    The first payment of a block to a payee counts them in one pass; the next ones (same
    block, same time: same windows) keep the count up to date as they enter and push older
    payments out, instead of a pass over up to recent.RECENT_PAYMENTS_MAX payments each.
    """
    threshold, split_from = params.approval_threshold_cents, now - params.split_window_ms
    dropped = window.append(entry)
    if window.small is None:
        inside = window.entries[window.since(split_from) :]
        small = list(filter(threshold.__gt__, map(recent.CENTS, inside)))
        window.small = (len(small), sum(small))
        return window.small
    count, total = window.small
    if entry[1] < threshold:
        count, total = count + 1, total + entry[1]
    if dropped is not None and dropped[0] >= split_from and dropped[1] < threshold:
        count, total = count - 1, total - dropped[1]
    window.small = (count, total)
    return window.small


def _alert(kind: str, entries: list[list[Any]], height: int, detail: str) -> Alert:
    evidence = tuple(p[-1] for p in entries[-EVIDENCE_MAX:])
    return Alert(kind, evidence, height, detail)


def normal_invoice(invoice: str) -> str:
    """`invoice` with every character but 0-9A-Za-z removed, upper-cased, and the leading
    zeros of each run of digits removed (a run of zeros keeps one)."""
    return _LEADING_ZEROS.sub("", _NOT_ALNUM.sub("", invoice).upper())


def _invoice(view: _View, tx: Transaction, height: int) -> list[Alert]:
    invoice, payee = tx.body["invoice"], tx.body["payee"]
    key = state_key(_INVOICES, payee, normal_invoice(invoice))
    seen = view.get(key)
    if seen is None:
        view.writes[key] = [invoice, tx.tx_id]
        return []
    if seen[0] == invoice:
        return []
    entries = [[seen[1]], [tx.tx_id]]
    return [_alert(NEAR_DUPLICATE_INVOICE, entries, height, f"{invoice!r} after {seen[0]!r}")]


def _benford(view: _View, tx: Transaction, height: int, params: RuleParams) -> list[Alert]:
    key = view.digits_key(tx.body["line"])
    if key is None:
        return []
    counts = view.writes.get(key)  # this block's own list (changed in place), or a new one
    if counts is None:
        counts = list(view.get(key) or [0] * 10 + [False])
    counts[0] += 1
    counts[int(str(tx.body["amount_cents"])[0])] += 1
    n = counts[0]
    flagged = n >= params.benford_min_payments and _deviates(view, key, counts, params)
    raise_now = flagged and not counts[10]
    counts[10] = flagged
    view.writes[key] = counts
    if not raise_now:
        return []
    mad_ppm = _deviation(counts) // (9 * n)
    detail = f"{view.department_of[key]}: {n} payments, mean absolute deviation {mad_ppm} ppm"
    return [Alert(BENFORD_DEVIATION, (tx.tx_id,), height, detail)]


def _deviation(counts: list[Any]) -> int:
    """sum |count_d * 1e6 - n * E_d| over the digits d: mean |observed - expected| is above a
    bound (ppm) exactly when this is above 9 * n * bound."""
    n = counts[0]
    observed = map(_MILLION.__mul__, counts[1:10])
    return sum(map(abs, map(operator.sub, observed, map(n.__mul__, BENFORD_PPM))))


def _deviates(view: _View, key: bytes, counts: list[Any], params: RuleParams) -> bool:
    """Is `_deviation(counts)` above 9 * n * benford_mad_max_ppm? One payment moves the
    deviation by at most _DEVIATION_STEP_MAX and the bound by 9 * |benford_mad_max_ppm|, so
    the answer computed at n holds for as many payments after it as its distance from the
    bound allows: within a block, it is computed again only then (the same answers)."""
    n = counts[0]
    known = view.deviates.get(key)
    if known is not None and n <= known[0]:
        return known[1]
    gap: int = _deviation(counts) - 9 * n * params.benford_mad_max_ppm
    step = _DEVIATION_STEP_MAX + 9 * abs(params.benford_mad_max_ppm)
    # The answer stays while gap - j * step > 0 (above), or gap + j * step <= 0 (not above).
    unchanged = (gap - 1) // step if gap > 0 else -gap // step
    view.deviates[key] = (n + unchanged, gap > 0)
    return gap > 0


def _claim(view: _View, tx: Transaction, height: int, organisation: str) -> list[Alert]:
    filed = view.get(state_key(claim.TABLE, tx.key))
    assert filed is not None  # an accepted claim wrote its entry
    key = state_key(_CLAIMS, filed["property_id"], filed["event_id"])
    claims = list(view.get(key) or [])
    others = [c for c in claims if c[0] != organisation]
    claims = [*claims, [organisation, tx.tx_id]][-EVIDENCE_MAX:]
    view.writes[key] = claims
    if not others:
        return []
    entries = [*[[c[1]] for c in others], [tx.tx_id]]
    detail = f"{filed['property_id']} / {filed['event_id']} at {len(others) + 1} insurers"
    return [_alert(CROSS_INSURER_CLAIM, entries, height, detail)]
