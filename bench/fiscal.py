"""The fiscal workload of `bench/cluster.py fiscal`: typed records with rules, pre-signed.

`setup(genesis, i)` is the i-th record of the set-up run (one appropriation, budget lines and
payees, committed before the measured run); `record(genesis, i)` the i-th record of the
measured run: payments against the lines (each its own key and invoice), now and then a line's
allocation changed, and one payment in twenty against a line of one cent, which a rule refuses
in block order (`over_allocation`: recorded, refused, no state changed). Every record is the
finance bureau's (`fiscal/`), signed by its clerk.
"""

from typing import Any, Final

LINES: Final = 50
PAYEES: Final = 20
REFUSED_EVERY: Final = 20  # one payment in 20 over-spends: refused in block order
REALLOCATE_EVERY: Final = 25  # one record in 25 changes a line's allocation
LINE_CENTS: Final = 10**12  # ample for any run: only the one-cent line is over-spent
ROOT: Final = "fiscal/bench"

Record = tuple[str, str, dict[str, Any]]  # key, type, body


def setup_count() -> int:
    return 2 + LINES + PAYEES


def setup(i: int, now_ms: int) -> Record:
    if i == 0:
        return f"{ROOT}/appropriation", "budget.appropriation", {
            "fiscal_year": 2027, "fund": "general", "department": "bench",
            "amount_cents": 10**15, "closes_at_ms": now_ms + 365 * 86_400_000,
        }  # fmt: skip
    if i <= LINES + 1:  # lines 0..LINES-1, and the one-cent line
        cents = 1 if i == LINES + 1 else LINE_CENTS
        return _line(i - 1, cents)
    payee = i - LINES - 2
    return f"{ROOT}/payees/{payee}", "payee.registration", {
        "name": f"Payee {payee}", "tax_id": f"TX-{payee:06d}", "status": "active",
    }  # fmt: skip


def _line(n: int, cents: int) -> Record:
    return f"{ROOT}/lines/{n}", "budget.allocation", {
        "appropriation": f"{ROOT}/appropriation", "amount_cents": cents,
        "purpose": "benchmark line",
    }  # fmt: skip


def record(i: int, run_id: str) -> Record:
    if i % REALLOCATE_EVERY == REALLOCATE_EVERY - 1:
        return _line(i % LINES, LINE_CENTS + i)
    line = LINES if i % REFUSED_EVERY == 0 else i % LINES  # line LINES holds one cent
    return f"{ROOT}/payments/{run_id}/{i}", "budget.disbursement", {
        "line": f"{ROOT}/lines/{line}", "payee": f"{ROOT}/payees/{i % PAYEES}",
        "invoice": f"{run_id}-{i:09d}", "amount_cents": 1000 + i % 977,
        "purpose": "inspection and repairs, filed with the city archive",
    }  # fmt: skip
