"""Risk monitoring: each alert fires on the pattern it names, with its evidence, and not on
the ordinary flow next to it; a replay from genesis raises the same alerts."""

import dataclasses
import itertools
from typing import Any, Final

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.genesis import RuleParams
from ledger.kinds import recent as recent_module
from ledger.kinds import risks
from ledger.kinds.execute import Overlay, execute
from tests import factory

NET: Final = factory.network()
T0: Final = factory.BASE_TIME_MS
HOUR_MS: Final = 3_600_000
ORG_OF: Final = {c.id: c.organisation for c in NET.genesis.clients.values()}
FINANCE: Final = "fiscal-clerk0"


class Ledger:
    """Blocks of txs executed and monitored in order, as the store does."""

    def __init__(self, params: RuleParams | None = None) -> None:
        self.state = Overlay(lambda _k: None)
        self.params = params or RuleParams()
        self.height = 0
        self.alerts: list[risks.Alert] = []
        self.txs: list[Any] = []
        self.blocks: list[tuple[tuple[Any, ...], int]] = []

    def block(
        self, items: list[tuple[str, str, str, dict[str, Any]]], time_ms: int
    ) -> list[risks.Alert]:
        return self.replay(tuple(NET.tx(c, k, b, time_ms, t) for c, k, t, b in items), time_ms)

    def replay(self, body: tuple[Any, ...], time_ms: int) -> list[risks.Alert]:
        self.blocks.append((body, time_ms))
        self.txs += body
        self.height += 1
        executed = execute(self.state.get, body, NET.genesis, time_ms, self.height)
        self.state.update(executed.writes)
        pairs = zip(body, executed.outcomes, strict=True)
        raised, writes = risks.monitor(self.state, self.height, time_ms, pairs, ORG_OF, self.params)
        self.state.update(writes)
        self.alerts += raised
        return raised


def setup(ledger: Ledger) -> None:
    ledger.block([
        (FINANCE, "fiscal/a/parks", "budget.appropriation", {
            "fiscal_year": 2027, "fund": "general", "department": "parks",
            "amount_cents": 10**12, "closes_at_ms": T0 + 10**12}),
        (FINANCE, "fiscal/l/1", "budget.allocation",
         {"appropriation": "fiscal/a/parks", "amount_cents": 10**11}),
        (FINANCE, "fiscal/p/acme", "payee.registration",
         {"name": "Acme", "tax_id": "T", "status": "active"}),
        (FINANCE, "fiscal/p/bolt", "payee.registration",
         {"name": "Bolt", "tax_id": "U", "status": "active"}),
    ], T0)  # fmt: skip


def pay(
    n: int, cents: int, invoice: str = "", payee: str = "fiscal/p/acme"
) -> tuple[str, str, str, dict[str, Any]]:
    body = {"line": "fiscal/l/1", "payee": payee, "invoice": invoice or f"INV-{n}",
            "amount_cents": cents}  # fmt: skip
    return FINANCE, f"fiscal/d/{n}", "budget.disbursement", body


def kinds(alerts: list[risks.Alert]) -> list[str]:
    return [a.kind for a in alerts]


def test_split_payments_under_the_threshold_are_flagged_when_they_reach_it() -> None:
    ledger = Ledger()
    setup(ledger)
    assert ledger.block([pay(1, 400_000), pay(2, 400_000)], T0 + HOUR_MS) == []
    raised = ledger.block([pay(3, 300_000)], T0 + 2 * HOUR_MS)
    assert kinds(raised) == [risks.SPLIT_PAYMENT]
    assert raised[0].evidence == tuple(t.tx_id for t in ledger.txs[-3:])
    assert ledger.block([pay(4, 100_000)], T0 + 3 * HOUR_MS) == []  # already over: once
    later = Ledger()
    setup(later)
    later.block([pay(1, 600_000)], T0)
    assert later.block([pay(2, 600_000)], T0 + 25 * HOUR_MS) == []  # outside the window


def test_round_amounts_at_or_above_the_threshold() -> None:
    ledger = Ledger()
    setup(ledger)
    assert kinds(ledger.block([pay(1, 2_000_000)], T0 + 1)) == [risks.ROUND_AMOUNT]
    assert ledger.block([pay(2, 2_000_001, payee="fiscal/p/bolt")], T0 + 2) == []
    assert ledger.block([pay(3, 900_000, payee="fiscal/p/bolt")], T0 + 3) == []  # below


def test_payee_velocity_is_raised_once_past_the_bound() -> None:
    ledger = Ledger(dataclasses.replace(RuleParams(), velocity_max_payments=3))
    setup(ledger)
    raised = [ledger.block([pay(i, 10 + i)], T0 + i) for i in range(1, 6)]
    assert [kinds(r) for r in raised] == [[], [], [], [risks.PAYEE_VELOCITY], []]
    assert len(raised[3][0].evidence) == 4


def test_near_duplicate_invoice_numbers() -> None:
    ledger = Ledger()
    setup(ledger)
    ledger.block([pay(1, 500, invoice="INV-0077")], T0 + 1)
    raised = ledger.block([pay(2, 700, invoice="inv 77")], T0 + 2)
    assert kinds(raised) == [risks.NEAR_DUPLICATE_INVOICE]
    assert raised[0].evidence == (ledger.txs[-2].tx_id, ledger.txs[-1].tx_id)
    assert ledger.block([pay(3, 700, invoice="INV-78")], T0 + 3) == []


def _plain_normal_invoice(invoice: str) -> str:
    kept = "".join(c for c in invoice if c.isascii() and c.isalnum()).upper()
    runs = ["".join(g) for _, g in itertools.groupby(kept, key=str.isdigit)]
    return "".join((r.lstrip("0") or "0") if r.isdigit() else r for r in runs)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0019Aab -./_é\u0660", max_size=16))
def test_invoice_numbers_are_normalised_as_defined(invoice: str) -> None:
    assert risks.normal_invoice(invoice) == _plain_normal_invoice(invoice)


def test_benford_deviation_of_a_department() -> None:
    ledger = Ledger(dataclasses.replace(RuleParams(), benford_min_payments=20))
    setup(ledger)
    raised = [ledger.block([pay(i, 900 + i)], T0 + i) for i in range(1, 25)]  # all start with 9
    fired = [i for i, r in enumerate(raised, 1) if kinds(r) == [risks.BENFORD_DEVIATION]]
    assert fired == [20]  # once it has enough payments, and only once while it stays off


def test_benford_holds_its_peace_for_a_natural_distribution() -> None:
    # First digits in Benford's proportions (299 payments); judged once there are that many.
    counts = (90, 53, 37, 29, 24, 20, 17, 15, 14)
    ledger = Ledger(dataclasses.replace(RuleParams(), benford_min_payments=sum(counts)))
    setup(ledger)
    digits = [d for d, n in enumerate(counts, 1) for _ in range(n)]
    items = [pay(i, d * 100 + i % 100) for i, d in enumerate(digits, 1)]
    ledger.block(items, T0 + 1)
    assert [a for a in ledger.alerts if a.kind == risks.BENFORD_DEVIATION] == []


def test_cross_insurer_claims_on_one_property_and_event() -> None:
    ledger = Ledger()
    harbor, civic = "claims-clerk0", "policies-clerk0"
    cover = {"holder": "H", "property_id": "parcel-7", "perils": ["typhoon"],
             "coverage_cents": 10_000, "starts_ms": T0, "ends_ms": T0 + 10**9}  # fmt: skip
    claim = {"event_id": "typhoon-1", "event_ms": T0 + 5, "peril": "typhoon",
             "loss_cents": 5000, "claimed_cents": 5000}  # fmt: skip
    ledger.block([
        (harbor, "policies/h/1", "insurance.policy", cover),
        (civic, "policies/c/1", "insurance.policy", cover),
        (harbor, "claims/h/1", "insurance.claim", {**claim, "policy": "policies/h/1"}),
    ], T0 + 10)  # fmt: skip
    assert ledger.alerts == []
    raised = ledger.block(
        [(civic, "claims/c/1", "insurance.claim", {**claim, "policy": "policies/c/1"})], T0 + 20
    )
    assert kinds(raised) == [risks.CROSS_INSURER_CLAIM]
    assert raised[0].evidence == (ledger.txs[2].tx_id, ledger.txs[3].tx_id)


def test_a_second_replay_raises_the_same_alerts() -> None:
    first, second = Ledger(), Ledger()
    setup(first)
    first.block([pay(1, 400_000), pay(2, 400_000), pay(3, 300_000, invoice="inv 1")], T0 + 5)
    first.block([pay(4, 2_000_000)], T0 + 6)
    for body, time_ms in first.blocks:  # the same txs, replayed by an independent state
        second.replay(body, time_ms)
    assert first.alerts == second.alerts
    assert kinds(first.alerts) == [
        risks.SPLIT_PAYMENT,
        risks.NEAR_DUPLICATE_INVOICE,
        risks.ROUND_AMOUNT,
    ]


# --- The payee windows against a plain definition ---------------------------------------------
# `risks` keeps a count per payee within a block instead of passing over its recent payments
# for each payment; this reference does the passes, straight from the definitions.


def _reference_payments(
    blocks: list[tuple[list[tuple[str, int, bytes]], int]], params: RuleParams
) -> tuple[list[tuple[str, tuple[bytes, ...], str]], dict[str, list[list[Any]]]]:
    """The alerts, and every payment to each payee (oldest first)."""
    every: dict[str, list[list[Any]]] = {}
    out: list[tuple[str, tuple[bytes, ...], str]] = []
    threshold = params.approval_threshold_cents
    for payments, now in blocks:
        for payee, cents, tx_id in payments:
            every.setdefault(payee, []).append([now, cents, tx_id])
            horizon = now - max(params.split_window_ms, params.velocity_window_ms)
            recent = [p for p in every[payee] if p[0] >= horizon][
                -recent_module.RECENT_PAYMENTS_MAX :
            ]
            window = [p for p in recent if p[0] >= now - params.split_window_ms]
            small = [p for p in window if p[1] < threshold]
            before = sum(p[1] for p in small[:-1])
            if cents < threshold and len(small) >= 2 and before < threshold <= before + cents:
                out.append((risks.SPLIT_PAYMENT, _ids(small), f"{len(small)} payments to {payee}"))
            if cents >= threshold and cents % params.round_amount_cents == 0:
                out.append((risks.ROUND_AMOUNT, _ids(recent[-1:]), f"{cents} cents to {payee}"))
            fast = [p for p in recent if p[0] >= now - params.velocity_window_ms]
            if len(fast) == params.velocity_max_payments + 1:
                out.append((risks.PAYEE_VELOCITY, _ids(fast), f"{len(fast)} payments to {payee}"))
    return out, every


def _ids(entries: list[list[Any]]) -> tuple[bytes, ...]:
    return tuple(p[-1] for p in entries[-risks.EVIDENCE_MAX :])


_PAYEES: Final = ("fiscal/p/acme", "fiscal/p/bolt", "fiscal/p/coda")
_WINDOW_PARAMS: Final = RuleParams(
    approval_threshold_cents=1_000, split_window_ms=50, round_amount_cents=250,
    velocity_window_ms=80, velocity_max_payments=6,
)  # fmt: skip
_CENTS: Final = (1, 90, 300, 499, 999, 1_000, 1_250)  # around the threshold, and round
_payment = st.tuples(st.sampled_from(_PAYEES), st.sampled_from(_CENTS))
_blocks = st.lists(
    st.tuples(st.lists(_payment, max_size=14), st.integers(min_value=0, max_value=60)),
    min_size=1, max_size=12,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(_blocks, st.sampled_from((4, 9, 256)), st.sampled_from((1, 3, 16)))
def test_payee_windows_match_their_plain_definition(
    blocks: list[tuple[list[tuple[str, int]], int]], recent_max: int, chunk: int
) -> None:
    """Splits, round amounts and velocity, with several payments per payee in one block,
    windows that open and close, and lists at their bound (a small bound, to reach it), kept
    in chunks of several sizes: what the state holds is each payee's last payments."""
    saved = recent_module.RECENT_PAYMENTS_MAX, recent_module.CHUNK_PAYMENTS
    recent_module.RECENT_PAYMENTS_MAX = recent_max  # type: ignore[misc]
    recent_module.CHUNK_PAYMENTS = chunk  # type: ignore[misc]
    try:
        state: dict[bytes, Any] = {}
        raised: list[risks.Alert] = []
        timed, now, n = [], T0, 0
        for payments, step in blocks:
            now += step
            body = []
            for payee, cents in payments:
                n += 1
                body.append(NET.tx(FINANCE, f"fiscal/d/{n}", {
                    "line": "fiscal/l/none", "payee": payee, "invoice": f"I{n}",
                    "amount_cents": cents}, T0, "budget.disbursement"))  # fmt: skip
            pairs = [(t, "") for t in body]
            alerts, writes = risks.monitor(state, 1, now, pairs, ORG_OF, _WINDOW_PARAMS)
            state.update(writes)
            raised += alerts
            timed.append(([(t.body["payee"], t.body["amount_cents"], t.tx_id) for t in body], now))
        expected, every = _reference_payments(timed, _WINDOW_PARAMS)
        assert [(a.kind, a.evidence, a.detail) for a in raised] == expected
        for payee, payments in every.items():
            assert recent_module.stored(state.get, payee) == payments[-(recent_max - 1) :]
        slots = recent_max // chunk + 2
        assert len([k for k in state if k.startswith(b"rq")]) <= len(every) * slots
    finally:
        recent_module.RECENT_PAYMENTS_MAX, recent_module.CHUNK_PAYMENTS = saved  # type: ignore[misc]


def _plain_benford(digits: list[int], min_payments: int, mad_ppm: int) -> list[tuple[int, int]]:
    """(payment index, mean absolute deviation in ppm) of each Benford alert, by definition:
    a payment raises one when the department's first-digit frequencies, counted up to it,
    deviate by more than the bound and did not after the payment before it."""
    out, counts, above = [], [0] * 10, False
    for i, d in enumerate(digits):
        counts[d] += 1
        n = i + 1
        mad = sum(abs(counts[k] * 1_000_000 - n * e) for k, e in enumerate(risks.BENFORD_PPM, 1))
        now = n >= min_payments and mad > 9 * n * mad_ppm
        if now and not above:
            out.append((i, mad // (9 * n)))
        above = now
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from((1, 1, 1, 2, 3, 5, 9)), min_size=1, max_size=25),
             min_size=1, max_size=12),
    st.integers(1, 40),
    st.sampled_from((0, 5_000, 15_000, 40_000, 90_000, 200_000)),
)  # fmt: skip
def test_benford_alerts_are_the_ones_of_its_definition_in_blocks_of_any_size(
    blocks: list[list[int]], min_payments: int, mad_ppm: int
) -> None:
    params = dataclasses.replace(
        RuleParams(), benford_min_payments=min_payments, benford_mad_max_ppm=mad_ppm
    )
    ledger = Ledger(params)
    setup(ledger)
    digits = [d for block in blocks for d in block]
    for b, block in enumerate(blocks):
        first = len(ledger.txs) - 1  # payment i is pay(i): its amount starts with digits[i]
        ledger.block([pay(first + i, d * 1000 + i % 1000) for i, d in enumerate(block)], T0 + b)
    payments = ledger.txs[-len(digits) :]
    raised = [a for a in ledger.alerts if a.kind == risks.BENFORD_DEVIATION]
    expected = [
        (payments[i].tx_id, f"parks: {i + 1} payments, mean absolute deviation {m} ppm")
        for i, m in _plain_benford(digits, min_payments, mad_ppm)
    ]
    assert [(a.evidence[0], a.detail) for a in raised] == expected


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=9, max_size=9), st.integers(1, 9))
def test_one_payment_moves_the_benford_deviation_by_at_most_its_step(
    counts: list[int], digit: int
) -> None:
    before = [sum(counts), *counts, False]
    after = list(before)
    after[0] += 1
    after[digit] += 1
    moved = abs(risks._deviation(after) - risks._deviation(before))
    assert moved <= risks._DEVIATION_STEP_MAX
    if counts == [0] * 9:  # the first payment: its digit's term and every other at their most
        assert moved == risks._MILLION - 2 * risks.BENFORD_PPM[digit - 1] + sum(risks.BENFORD_PPM)
