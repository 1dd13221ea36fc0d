"""What goes into the replica (events) and what comes out (actions).

The shell that carries out actions (the node, or the simulator) must execute them in the order
given: a `Persist` placed before a `Send` must be durable before the message leaves, and a
`CommitBlock` must be applied to the store before anything that follows it. The simplest shell
executes every action completely before it hands the replica the next event. A shell may
instead hand it the next event while durable actions (`Persist`, `CommitBlock`) are still being
written, if (1) every later action of any event takes effect only after them, in the same
order (so what leaves the node, and what a crash leaves on disk, is what the simple shell could
show at some moment, only later), and (2) the `is_committed` it gave the replica also answers
True for the txs of `CommitBlock`s still on their way to the store. Timer actions are local
and may take effect at once. A `Send` or `FetchBlocks` names its peer by index in the set of
the epoch the replica was in when it emitted it, which is the set in force at the store's head
once everything before the action has taken effect: the shell addresses it with that set
(docs/protocol.md 13.6). The transport is weak on purpose: a `Send` may be lost,
duplicated or reordered; the replica recovers with its own timers.

The events: `Start()` first. Admitted client txs go in as `ClientTxs` while the replica's
`pool_free` allows (else the shell answers 429); the replica relays them to its peers as a
`TxBatch`, which the receiving shell admits itself and hands in with `relayed=True`. Every
other peer message goes in as `Received` after `decode_message` (the replica checks its
signature); a `Timeout` when the deadline of a `SetTimer` comes; `BlocksFetched` with a peer's
answer to `FetchBlocks`.
"""

import enum
from dataclasses import dataclass
from typing import Final

from ledger.block import Block, Certificate
from ledger.tx import Transaction

from consensus.messages import Message


class Timer(enum.Enum):
    PROPOSE = "propose"  # the primary's next block is due
    PROGRESS = "progress"  # pending work has waited too long: ask for a view change
    CENSORSHIP = "censorship"  # a pooled tx was passed over by blocks with room for it
    VIEW_CHANGE = "view_change"  # the new view did not start in time: try the next one
    RETRANSMIT = "retransmit"  # re-send own latest votes and status (messages may be lost)
    FETCH = "fetch"  # a block fetch went unanswered: ask another peer


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The replica was constructed (fresh or from persisted state): arm timers, say hello."""


@dataclass(frozen=True)
class Received:
    """A decoded message from a peer; the replica checks its signature and content."""

    message: Message


@dataclass(frozen=True)
class Timeout:
    timer: Timer


@dataclass(frozen=True)
class ClientTxs:
    """Transactions that passed admission (signature, client, namespace, time, size).

    `relayed` is True for txs that came from another replica's TxBatch: they are not relayed on.
    """

    txs: tuple[Transaction, ...]
    relayed: bool = False


@dataclass(frozen=True)
class BlocksFetched:
    """The answer to `FetchBlocks` from `peer`: certified blocks in height order (maybe none)."""

    peer: int
    blocks: tuple[tuple[Block, Certificate], ...]


Event = Start | Received | Timeout | ClientTxs | BlocksFetched


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    to: int
    message: Message


@dataclass(frozen=True)
class Broadcast:
    """Send to every other validator."""

    message: Message


@dataclass(frozen=True)
class Persist:
    """Durably write (sync) these entries of the replica's own state before going on."""

    puts: tuple[tuple[bytes, bytes], ...]
    deletes: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class CommitBlock:
    """Append this certified block to the store (one synced batch) before going on.

    `txs_checked`: the replica validated every tx of this very block against its parent
    (`ledger.block.check_block`, when it accepted it), so the store need not check them again;
    False for blocks taken on their certificate alone (state transfer, or after a restart)."""

    block: Block
    certificate: Certificate
    txs_checked: bool = False


@dataclass(frozen=True)
class SetTimer:
    timer: Timer
    at_ms: int


@dataclass(frozen=True)
class CancelTimer:
    timer: Timer


# The block-fetch limit, one for the whole system: a FetchBlocks asks for at most this many
# blocks, a node serves at most this many per answer (`/peer/v1/blocks`, also bounded by bytes),
# and reads at most this many from an answer.
FETCH_BLOCKS_MAX: Final = 64


@dataclass(frozen=True)
class FetchBlocks:
    """Ask `peer` for certified blocks from_height..to_height (at most `FETCH_BLOCKS_MAX`);
    answer with `BlocksFetched`."""

    peer: int
    from_height: int
    to_height: int


@dataclass(frozen=True)
class TxsExpired:
    """These pooled txs left the pool unproposed: their timestamp fell out of the time-to-live
    (`tx_ttl_ms`), so no block of this replica's will carry them. The shell answers whoever
    waits for them; a tx may still commit if a block holding it was prepared elsewhere."""

    tx_ids: tuple[bytes, ...]


Action = (
    Send | Broadcast | Persist | CommitBlock | SetTimer | CancelTimer | FetchBlocks | TxsExpired
)
