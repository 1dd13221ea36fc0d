"""A payee's recent payments, as risk monitoring (ledger/kinds/risks.py) keeps them.

Monitoring looks at the last `RECENT_PAYMENTS_MAX` payments to a payee, the one it checks
included. They are kept in the rule state in chunks of `CHUNK_PAYMENTS`, so a block that pays
a payee writes only the chunks its payments fall in, not the whole window (one entry of 256
payments rewritten in every block that paid the payee was most of the fiscal workload's
rule-state writes):

    b"rp" payee             -> n: the payments to the payee recorded so far
    b"rq" payee NUL slot    -> [c, [[time_ms, cents, tx id], ...]]: chunk c, the payments
                               numbered c * CHUNK_PAYMENTS up to CHUNK_PAYMENTS more, oldest
                               first, in slot c mod `slots()` (a ring: a chunk overwrites
                               one that no window reaches any more)

Payments are numbered from 0 in the order they are recorded; block times never decrease
(ledger/block.py, check_links), so every list is in time order and a time window is a suffix.
Pure: no I/O.
"""

import bisect
import operator
from typing import Any, Final

from ledger.kinds.base import Writes, state_key

RECENT_PAYMENTS_MAX: Final = 256
CHUNK_PAYMENTS: Final = 16
_COUNT: Final = b"rp"
_CHUNK: Final = b"rq"
TIME: Final = operator.itemgetter(0)  # of a payment [time_ms, cents, tx id]
CENTS: Final = operator.itemgetter(1)

Getter = Any  # `get(key)` of a rule state


def slots() -> int:
    """Chunk slots per payee: the RECENT_PAYMENTS_MAX - 1 payments a load reads span at most
    ceil((RECENT_PAYMENTS_MAX - 1) / CHUNK_PAYMENTS) + 1 chunks, and this is at least that."""
    return RECENT_PAYMENTS_MAX // CHUNK_PAYMENTS + 2


class Window:
    """A payee's last RECENT_PAYMENTS_MAX payments as one block sees them, with the payments
    before them back to a chunk boundary (so each chunk it writes is whole)."""

    def __init__(self, payee: str, stored: int, first: int, entries: list[list[Any]]) -> None:
        self.payee = payee
        self.stored = stored  # payments recorded before this block
        self.first = first  # the number of entries[0]: a multiple of CHUNK_PAYMENTS
        self.entries = entries
        # (count, sum of cents) of the window's payments under the approval threshold and
        # inside the split window, once the block's first payment to the payee counted them.
        self.small: tuple[int, int] | None = None

    @classmethod
    def load(cls, get: Getter, payee: str) -> "Window":
        stored = get(state_key(_COUNT, payee)) or 0
        if stored == 0:
            return cls(payee, 0, 0, [])
        # The window of the next payment: the RECENT_PAYMENTS_MAX - 1 before it.
        first_chunk = max(0, stored - (RECENT_PAYMENTS_MAX - 1)) // CHUNK_PAYMENTS
        entries: list[list[Any]] = []
        for chunk in range(first_chunk, (stored - 1) // CHUNK_PAYMENTS + 1):
            found = get(_slot_key(payee, chunk))
            assert found is not None, "a payee's chunks are all written"
            assert found[0] == chunk, "no later chunk took the slot of one in the window"
            entries += found[1]
        assert len(entries) == stored - first_chunk * CHUNK_PAYMENTS
        return cls(payee, stored, first_chunk * CHUNK_PAYMENTS, entries)

    @property
    def count(self) -> int:
        """Payments recorded, this block's so far included."""
        return self.first + len(self.entries)

    @property
    def start(self) -> int:
        """The index in `entries` of the window's oldest payment."""
        return max(0, len(self.entries) - RECENT_PAYMENTS_MAX)

    def since(self, time_ms: int) -> int:
        """The index in `entries` of the window's first payment at or after `time_ms`."""
        return bisect.bisect_left(self.entries, time_ms, lo=self.start, key=TIME)

    def append(self, entry: list[Any]) -> list[Any] | None:
        """Record `entry`; the payment it pushed out of the window, if any."""
        assert not self.entries or self.entries[-1][0] <= entry[0], "recorded in time order"
        self.entries.append(entry)
        left = len(self.entries) - RECENT_PAYMENTS_MAX - 1
        out = self.entries[left] if left >= 0 else None
        if left >= CHUNK_PAYMENTS:  # a whole chunk no window reaches any more
            del self.entries[:CHUNK_PAYMENTS]
            self.first += CHUNK_PAYMENTS
        return out

    def writes(self) -> Writes:
        """The entries this block's payments changed: the count and the chunks they fall in."""
        out: Writes = {state_key(_COUNT, self.payee): self.count}
        first_chunk = max(self.stored, self.first) // CHUNK_PAYMENTS
        for chunk in range(first_chunk, (self.count - 1) // CHUNK_PAYMENTS + 1):
            begin = chunk * CHUNK_PAYMENTS - self.first
            out[_slot_key(self.payee, chunk)] = [
                chunk,
                self.entries[begin : begin + CHUNK_PAYMENTS],
            ]
        return out


def _slot_key(payee: str, chunk: int) -> bytes:
    return state_key(_CHUNK, payee, str(chunk % slots()))


def stored(get: Getter, payee: str) -> list[list[Any]]:
    """The payments to `payee` the window of its next payment holds before it (the last
    RECENT_PAYMENTS_MAX - 1), oldest first."""
    window = Window.load(get, payee)
    return window.entries[max(0, len(window.entries) - (RECENT_PAYMENTS_MAX - 1)) :]
