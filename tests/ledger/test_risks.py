"""Risk monitoring: each alert fires on the pattern it names, with its evidence, and not on
the ordinary flow next to it; a replay from genesis raises the same alerts."""

import dataclasses
from typing import Any, Final

from ledger.genesis import RuleParams
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
