"""The simulated clients: a seeded stream of real, client-signed transactions.

It owns what clients submit and nothing about where it goes: the simulator picks the replica.
Two txs in three are typed records with rules (tests/sim/typed.py), whose outcomes depend on
the order they commit in. Now and then it resubmits a tx it sent before (a client retrying
after a timeout), which is how the same tx reaches two replicas' pools and tests that it is
still committed only once.
"""

import random
from typing import Final

from ledger import tx as txs
from tests.factory import BASE_TIME_MS, Network
from tests.sim.typed import typed

RESUBMITTED_KEPT: Final = 64


class SimClient:
    def __init__(self, net: Network, rng: random.Random, txs_max: int, resubmit: float) -> None:
        assert txs_max >= 1
        assert 0.0 <= resubmit <= 1.0
        self._net = net
        self._rng = rng
        self._clients = sorted(net.client_keys)
        self.txs_max = txs_max
        self.resubmit = resubmit
        self._recent: list[txs.Transaction] = []
        self.sent = 0
        self.typed = True  # two txs in three are typed records (tests/sim/typed.py)

    def batch(self, now_ms: int) -> tuple[txs.Transaction, ...]:
        """1..txs_max new txs stamped `now_ms` (true time), sometimes with an old one again."""
        rng = self._rng
        out: list[txs.Transaction] = []
        for _ in range(rng.randint(1, self.txs_max)):
            client = rng.choice(self._clients)
            namespace = client.split("-")[0]
            self.sent += 1
            key = f"{namespace}/rec-{rng.randrange(40)}"
            record = typed(namespace, self.sent) if self.typed else None
            if record is None:
                tx = self._net.tx(
                    client, key, {"seq": self.sent, "by": "sim"}, BASE_TIME_MS + now_ms
                )
            else:
                key, type_, body = record
                tx = self._net.tx(client, key, body, BASE_TIME_MS + now_ms, type_)
            out.append(tx)
        if self._recent and rng.random() < self.resubmit:
            out.append(rng.choice(self._recent))
        self._recent.extend(out)
        del self._recent[:-RESUBMITTED_KEPT]
        return tuple(out)
