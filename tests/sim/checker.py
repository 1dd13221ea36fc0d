"""The properties the simulator checks, and the error that reports a broken one.

Safety (checked at every commit, i.e. after every step that can change it): no two honest
replicas commit different blocks at a height; every committed block extends its store's chain
under the ledger rules and carries a valid certificate (the store refuses anything else); so
every committed tx is client-signed, allowed, in time and committed once. Across epochs: every
certificate an honest store holds is a quorum of the set of its block's own epoch, derived
here again from the store's governance history (`Configs.of_block`, docs/protocol.md 20.8),
not from the set the store or the replica were working with. Liveness (checked
after the faults heal): every honest replica reaches a target height within a time bound.
"""

from collections import Counter
from collections.abc import Sequence

from ledger import block as blocks
from ledger.errors import InvalidBlock
from ledger.gov.history import configs_for
from tests.sim.node import SimNode
from tests.sim.trace import short


class Violation(Exception):
    """A broken property (or a replica that raised): the run is a failure to report."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class SafetyChecker:
    def __init__(self) -> None:
        self._first: dict[int, tuple[bytes, int]] = {}  # height -> (block hash, first committer)
        self.stats: Counter[str] = Counter()

    def on_commit(
        self, node: SimNode, block: blocks.Block, certificate: blocks.Certificate
    ) -> None:
        """`block` (with `certificate`) has just entered `node`'s store."""
        if not node.honest:
            return
        self.stats["certificates_checked"] += 1
        config = configs_for(node.genesis).of_block(node.store.rules.get, block.height)
        try:
            blocks.verify_certificate(certificate, block, config.members)
        except InvalidBlock as exc:
            raise Violation(
                "epoch certificate",
                f"n{node.index} holds block {block.height} (epoch {config.epoch}) certified "
                f"by another set than its epoch's: {exc}",
            ) from None
        first = self._first.setdefault(block.height, (block.hash, node.index))
        if first[0] != block.hash:
            raise Violation(
                "safety",
                f"honest n{first[1]} committed {short(first[0])} at height {block.height}, "
                f"honest n{node.index} committed {short(block.hash)}",
            )

    def check_chains(self, nodes: Sequence[SimNode]) -> None:
        """Every honest chain is a prefix of one chain (a full pass, for the end of a run)."""
        longest: list[bytes] = []
        for node in nodes:
            if not node.honest:
                continue
            chain = [b.hash for b, _ in node.store.chain]
            common = min(len(chain), len(longest))
            if chain[:common] != longest[:common]:
                height = next(i for i in range(common) if chain[i] != longest[i]) + 1
                raise Violation("safety", f"n{node.index}'s chain forks at height {height}")
            if len(chain) > len(longest):
                longest = chain
