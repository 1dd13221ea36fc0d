"""Governance on the event stream, and the log line of an effect (docs/protocol.md 18.3).

Each accepted governance tx of a committed block gives one `governance` event: a `proposal` or
an `approval`; the tx that made its proposal effective gives one more right after it, an
`effect`. They are derived from the block and the proposal entries of the rule state
(ledger/gov/machine.py), whose change, effective height and approvals never change once the
proposal is effective, so the events of a block are the same whenever they are derived: live
at its commit or later from the store, on any node. Each effect is also logged at INFO.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ledger.block import Block
from ledger.gov import machine
from ledger.gov.history import Getter
from ledger.kinds.risks import Alert

log = logging.getLogger("cityledger.node.governance")

PROPOSAL: Final = "proposal"
APPROVAL: Final = "approval"
EFFECT: Final = "effect"


@dataclass(frozen=True)
class GovEvent:
    """One governance event of a block: `kind` is proposal | approval | effect."""

    kind: str
    index: int  # the tx's position in its block
    proposal: machine.Proposal
    tx_id: bytes
    admin: str
    key: str

    def view(self, height: int) -> dict[str, Any]:
        """The event's data on the stream."""
        p = self.proposal
        data: dict[str, Any] = {
            "kind": self.kind, "proposal": p.id, "height": height, "index": self.index,
            "tx_id": self.tx_id, "admin": self.admin, "change": p.change,
        }  # fmt: skip
        if self.kind == EFFECT:
            data |= {"approvals": list(p.approvals), "effective_height": p.effective_height}
        return data


def of_block(block: Block, get: Getter) -> tuple[GovEvent, ...]:
    """The governance events of a committed block, in block order; `get` reads a rule state at
    or after it."""
    accepted = [
        (index, tx)
        for index, (tx, code) in enumerate(zip(block.txs, block.outcomes, strict=True))
        if not code and machine.is_governance(tx.key)
    ]
    last = {tx.key.rsplit("/", 1)[-1]: index for index, tx in accepted}
    events: list[GovEvent] = []
    for index, tx in accepted:
        proposal_id = tx.key.rsplit("/", 1)[-1]
        proposal = machine.read_proposal(get, proposal_id)
        assert proposal is not None, "an accepted governance tx names a proposal"
        kind = PROPOSAL if tx.type == machine.PROPOSAL_TYPE else APPROVAL
        events.append(GovEvent(kind, index, proposal, tx.tx_id, tx.client_id, tx.key))
        if proposal.effective_height == block.height and last[proposal_id] == index:
            events.append(GovEvent(EFFECT, index, proposal, tx.tx_id, tx.client_id, tx.key))
    return tuple(events)


def log_effects(events: tuple[GovEvent, ...], height: int) -> None:
    for event in events:
        if event.kind == EFFECT:
            change = event.proposal.change
            log.info("governance change effective", extra={
                "event": "governance_effect", "proposal": event.proposal.id,
                "change": change.get("change"), "subject": change.get("id") or
                change.get("organisation"), "height": height,
                "approvals": list(event.proposal.approvals),
            })  # fmt: skip


Hook = Callable[[Block, tuple[Alert, ...], tuple[GovEvent, ...]], None]


def on_commit(hub_committed: Hook, get: Getter) -> Callable[[Block, tuple[Alert, ...]], None]:
    """The shell's commit callback: the block's governance events derived, effects logged, and
    all handed to the event hub."""

    def committed(block: Block, alerts: tuple[Alert, ...]) -> None:
        governance = of_block(block, get)
        log_effects(governance, block.height)
        hub_committed(block, alerts, governance)

    return committed
