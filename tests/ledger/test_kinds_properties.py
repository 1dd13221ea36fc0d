"""Property tests of the record kinds over random sequences of fiscal and insurance txs.

Whatever the order and whatever is refused: every line spends at most what it was allocated,
every appropriation allocates at most what it grants, no payee's invoice is paid twice, and
all insurers' payouts for one property and event stay within the least loss declared for it.
A second, independent replay (block by block, as the verifier runs it) gives the same
outcomes.
"""

import dataclasses
from collections import Counter, defaultdict
from typing import Any, Final

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import tx as txs
from ledger.block import Block, BlockHeader
from ledger.genesis import RuleParams
from ledger.gov.config import Config
from ledger.kinds import base
from ledger.kinds.execute import Overlay, execute, execute_tx
from ledger.kinds.risks import Alert, monitor
from ledger.rulestore import block_rules
from tests import factory

NET: Final = factory.network()
T0: Final = factory.BASE_TIME_MS
ORG_OF: Final = {c.id: c.organisation for c in NET.genesis.clients.values()}
FINANCE: Final = "fiscal-clerk0"
INSURERS: Final = ("claims-clerk0", "policies-clerk0")
APPROPRIATIONS: Final = ("fiscal/a/0", "fiscal/a/1")
LINES: Final = ("fiscal/l/0", "fiscal/l/1", "fiscal/l/2")
PAYEES: Final = ("fiscal/p/0", "fiscal/p/1")
EVENTS: Final = ("typhoon-1", "flood-2")
PROPERTIES: Final = ("parcel-1", "parcel-2")

cents = st.integers(min_value=0, max_value=1_500)
amounts = st.one_of(cents.map(lambda c: c + 1), st.sampled_from((500, 2_000, 2_500, 3_000)))
# Thresholds at the scale of these amounts, so that every kind of alert can fire.
PARAMS: Final = RuleParams(
    approval_threshold_cents=2_000,
    round_amount_cents=500,
    velocity_max_payments=5,
    benford_min_payments=20,
    benford_mad_max_ppm=60_000,
)


def _namespace(client: str) -> str:
    return f"policies/{client}/"


def _claims(client: str) -> str:
    return f"claims/{client}/"


def _prelude() -> list[tuple[str, str, str, dict[str, Any]]]:
    """Some of every referenced record, so that random txs mostly meet the amount rules."""
    items: list[tuple[str, str, str, dict[str, Any]]] = []
    for i, key in enumerate(APPROPRIATIONS):
        body = {"fiscal_year": 2027, "fund": "general", "department": "parks",
                "amount_cents": 50_000 + i * 1000, "closes_at_ms": T0 + 10**9}  # fmt: skip
        items.append((FINANCE, key, "budget.appropriation", body))
    for i, key in enumerate(LINES):
        body = {"appropriation": APPROPRIATIONS[i % 2], "amount_cents": 10_000}
        items.append((FINANCE, key, "budget.allocation", body))
    items += [(FINANCE, k, "payee.registration", {"name": "P", "tax_id": "T", "status": "active"})
              for k in PAYEES]  # fmt: skip
    for client in INSURERS:
        for i, prop in enumerate(PROPERTIES):
            body = {"holder": "H", "property_id": prop, "perils": ["typhoon", "flood"],
                    "coverage_cents": 3000, "starts_ms": T0, "ends_ms": T0 + 10**9}  # fmt: skip
            items.append((client, f"{_namespace(client)}pol/{i}", "insurance.policy", body))
        claim = {"policy": f"{_namespace(client)}pol/0", "event_id": EVENTS[0], "event_ms": T0 + 1,
                 "peril": "typhoon", "loss_cents": 1000, "claimed_cents": 800}  # fmt: skip
        items.append((client, f"{_claims(client)}cl/0", "insurance.claim", claim))
    return items


@st.composite
def fiscal_tx(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    kind = draw(st.sampled_from(("appr", "alloc", "transfer", "payee", "pay", "pay")))
    if kind == "appr":
        body = {"fiscal_year": 2027, "fund": "general", "department": "parks",
                "amount_cents": draw(cents) * 3, "closes_at_ms": T0 + 10**9}  # fmt: skip
        return FINANCE, draw(st.sampled_from(APPROPRIATIONS)), "budget.appropriation", body
    if kind == "alloc":
        body = {"appropriation": draw(st.sampled_from(APPROPRIATIONS)), "amount_cents": draw(cents)}
        return FINANCE, draw(st.sampled_from(LINES)), "budget.allocation", body
    if kind == "transfer":
        body = {"from_line": draw(st.sampled_from(LINES)), "to_line": draw(st.sampled_from(LINES)),
                "amount_cents": draw(cents) + 1}  # fmt: skip
        return FINANCE, f"fiscal/t/{draw(st.integers(0, 10**6))}", "budget.transfer", body
    if kind == "payee":
        status = draw(st.sampled_from(("active", "active", "blocked")))
        body = {"name": "P", "tax_id": "T", "status": status}
        return FINANCE, draw(st.sampled_from(PAYEES)), "payee.registration", body
    invoice = f"INV-{draw(st.integers(0, 5))}"
    body = {"line": draw(st.sampled_from(LINES)), "payee": draw(st.sampled_from(PAYEES)),
            "invoice": invoice, "amount_cents": draw(amounts)}  # fmt: skip
    return FINANCE, f"fiscal/d/{draw(st.integers(0, 10**6))}", "budget.disbursement", body


@st.composite
def insurance_tx(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    client = draw(st.sampled_from(INSURERS))
    ns = _namespace(client)
    kind = draw(st.sampled_from(("policy", "claim", "payout", "payout", "payout")))
    if kind == "policy":
        body = {"holder": "H", "property_id": draw(st.sampled_from(PROPERTIES)),
                "perils": ["typhoon", "flood"], "coverage_cents": draw(cents) + 1,
                "starts_ms": T0, "ends_ms": T0 + 10**9}  # fmt: skip
        return client, f"{ns}pol/{draw(st.integers(0, 2))}", "insurance.policy", body
    if kind == "claim":
        loss = draw(cents) + 1
        event = draw(st.sampled_from(EVENTS))
        body = {"policy": f"{ns}pol/{draw(st.integers(0, 1))}", "event_id": event,
                "event_ms": T0 + 1, "peril": "typhoon", "loss_cents": loss,
                "claimed_cents": draw(st.integers(1, loss))}  # fmt: skip
        return client, f"{_claims(client)}cl/{draw(st.integers(0, 1))}", "insurance.claim", body
    owner = draw(st.sampled_from((client, client, client, client, *INSURERS)))
    body = {
        "claim": f"{_claims(owner)}cl/{draw(st.integers(0, 1))}",
        "amount_cents": draw(cents) + 1,
    }
    return client, f"{_claims(client)}pay/{draw(st.integers(0, 10**6))}", "insurance.payout", body


def _sign(items: list[tuple[str, str, str, dict[str, Any]]]) -> list[txs.Transaction]:
    # Execution weighs organisations, not write policies (admission's): each insurer's
    # client writes its own policies/<client>/ and claims/<client>/ here.
    return [NET.tx(c, k, b, T0, t) for c, k, t, b in items]


def _replay_one_by_one(
    body: list[txs.Transaction], block_size: int
) -> tuple[list[str], Overlay, list[Alert]]:
    """Tx by tx through `execute_tx` (as a Book does), risk monitoring after each block."""
    state = Overlay(lambda _k: None)
    outcomes: list[str] = []
    alerts: list[Alert] = []
    for height, start in enumerate(range(0, len(body), block_size), 1):
        block = body[start : start + block_size]
        codes = []
        for tx in block:
            code, writes = execute_tx(state, tx, ORG_OF[tx.client_id], _time(height))
            state.update(writes)
            codes.append(code)
        raised, risk = monitor(state, height, _time(height), zip(block, codes, strict=True),
                               ORG_OF, PARAMS)  # fmt: skip
        state.update(risk)
        outcomes += codes
        alerts += raised
    return outcomes, state, alerts


def _time(height: int) -> int:
    return T0 + 10 + height * 3_600_000  # an hour a block: windows open and close


def _check_invariants(body: list[txs.Transaction], outcomes: list[str], state: Overlay) -> None:
    for line in LINES:
        value = state.get(base.state_key(b"l", line))
        if value is not None:
            assert 0 <= value["spent"] <= value["amount"]
    for key in APPROPRIATIONS:
        value = state.get(base.state_key(b"a", key))
        if value is not None:
            lines = [state.get(base.state_key(b"l", ln)) for ln in LINES]
            total = sum(ln["amount"] for ln in lines if ln and ln["appropriation"] == key)
            assert value["allocated"] == total <= value["amount"]
    accepted = [t for t, c in zip(body, outcomes, strict=True) if c == base.ACCEPTED]
    paid = Counter(
        (t.body["payee"], t.body["invoice"]) for t in accepted if t.type == "budget.disbursement"
    )
    assert all(n == 1 for n in paid.values())
    _check_loss(accepted)


def _check_loss(accepted: list[txs.Transaction]) -> None:
    claims = {t.key: t for t in accepted if t.type == "insurance.claim"}
    policies = {t.key: t for t in accepted if t.type == "insurance.policy"}  # latest version
    loss: dict[tuple[str, str], int] = {}
    paid: dict[tuple[str, str], int] = defaultdict(int)
    for t in accepted:
        if t.type == "insurance.claim":
            event = (policies[t.body["policy"]].body["property_id"], t.body["event_id"])
            loss[event] = min(loss.get(event, t.body["loss_cents"]), t.body["loss_cents"])
        elif t.type == "insurance.payout":
            c = claims[t.body["claim"]]
            paid[(policies[c.body["policy"]].body["property_id"], c.body["event_id"])] += t.body[
                "amount_cents"
            ]
    assert all(paid[e] <= loss[e] for e in paid)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(fiscal_tx(), insurance_tx()), min_size=1, max_size=60),
       st.integers(1, 8))  # fmt: skip
def test_rules_hold_in_every_order_and_a_second_replay_agrees(
    items: list[tuple[str, str, str, dict[str, Any]]], block_size: int
) -> None:
    body = _sign(_prelude() + items)
    outcomes, state, alerts = _replay_one_by_one(body, block_size)
    _check_invariants(body, outcomes, state)
    # The verifier's replay: block by block through `execute` and the store's `block_rules`,
    # against its own state.
    replayed: list[str] = []
    raised: list[Alert] = []
    verifier = Overlay(lambda _k: None)
    genesis = dataclasses.replace(NET.genesis, rules=PARAMS)
    for height, start in enumerate(range(0, len(body), block_size), 1):
        chunk = tuple(body[start : start + block_size])
        executed = execute(verifier.get, chunk, genesis, _time(height), height)
        header = BlockHeader(height, bytes(32), bytes(32), len(chunk), bytes(32), _time(height),
                             0, 0, bytes(32))  # fmt: skip
        block = Block(header, chunk, header.hash(), executed.outcomes)
        raised += block_rules(verifier, block, executed, genesis, Config(genesis))[1]
        replayed.extend(executed.outcomes)
    assert replayed == outcomes
    assert raised == alerts
    assert verifier.writes == state.writes
