"""The epoch a replica works in: the validator set, its quorums and the consensus parameters
of the heights above the committed head (docs/protocol.md sections 13.5 and 20.8).

The configuration in force after the committed head (ledger/gov) is explicit state the shell
hands the replica when it builds it; from then on the replica derives the next one itself
from its own rule state when it commits a block that ends the epoch. Every rule that names a
validator by index (senders, votes, the primary, quorums) reads the set of this epoch; a
certificate or a prepared proof of a block of the previous epoch (the head's own certificate
just after a boundary, a peer's ViewChange that names it) is checked against the previous set.
Pure: no I/O.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.genesis import ConsensusParams, Genesis, Quorums
from ledger.gov import changes, history
from ledger.gov.config import Config


@dataclass(frozen=True)
class Epoch:
    config: Config  # in force after the committed head
    previous: Config | None = None  # the one before the last boundary this replica crossed

    @property
    def number(self) -> int:
        return self.config.epoch

    @property
    def members(self) -> Genesis:
        return self.config.members

    @property
    def params(self) -> ConsensusParams:
        return self.config.members.params

    @property
    def quorums(self) -> Quorums:
        return self.config.members.quorums

    @property
    def size(self) -> int:
        return len(self.config.members.validators)

    @property
    def first_height(self) -> int:
        """The first block of this epoch."""
        return self.config.epoch_height + 1

    def index_of(self, validator_id: str, public_key: bytes) -> int | None:
        """The position of `validator_id` in this epoch's set, if it is there with this key."""
        found = self.members.validator(validator_id)
        return found.index if found is not None and found.public_key == public_key else None

    def set_of(self, height: int) -> Genesis | None:
        """The validators that certify block `height`, if this replica knows them: this
        epoch's for its blocks (and above: a later epoch's certificate then fails its check),
        the previous epoch's for its blocks, None below that."""
        if height >= self.first_height:
            return self.members
        previous = self.previous
        if previous is not None and height >= previous.epoch_height + 1:
            return previous.members
        return None

    def next(self, config: Config) -> "Epoch":
        return Epoch(config, self.config)

    @classmethod
    def of_genesis(cls, genesis: Genesis) -> "Epoch":
        """Epoch 0 of `genesis`'s chain."""
        return cls(Config(genesis))


def ends_epoch(writes: Mapping[bytes, Any]) -> bool:
    """Whether a block's rule-state writes make a change that ends its epoch effective."""
    head = writes.get(history.HEAD)
    if head is None:
        return False
    version = int(head[0])
    while version >= 1 and (entry := writes.get(history.change_key(version))) is not None:
        if changes.parse(dict(entry[1])).ends_epoch:
            return True
        version -= 1
    return False
