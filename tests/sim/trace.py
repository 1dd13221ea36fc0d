"""The simulator's trace: the last few hundred things that happened, rendered only on failure.

Entries keep references to the (immutable) messages and are formatted lazily, because a run
records far more lines than anyone reads and formatting them all would cost more than the run.
"""

from collections import deque
from typing import Final

from consensus import messages as m
from consensus.events import (
    Action,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientTxs,
    CommitBlock,
    Event,
    FetchBlocks,
    Persist,
    Received,
    Send,
    SetTimer,
    Start,
    Timeout,
)

TRACE_LINES_MAX: Final = 600


def short(digest: bytes) -> str:
    return digest[:4].hex()


def describe_message(msg: m.Message) -> str:
    match msg:
        case m.PrePrepare():
            b = msg.block
            return (
                f"PrePrepare(v{msg.view} h{msg.height} {short(b.hash)} txs={len(b.txs)} "
                f"from {msg.sender})"
            )
        case m.Prepare() | m.Commit():
            name = type(msg).__name__
            return f"{name}(v{msg.view} h{msg.height} {short(msg.block_hash)} from {msg.sender})"
        case m.Checkpoint():
            return f"Checkpoint(h{msg.height} {short(msg.block_hash)} from {msg.sender})"
        case m.ViewChange():
            prepared = ",".join(f"h{p.height}v{p.view}" for p in msg.prepared)
            return (
                f"ViewChange(->v{msg.new_view} committed=h{msg.committed_height} "
                f"prepared=[{prepared}] from {msg.sender})"
            )
        case m.NewView():
            senders = ",".join(str(vc.sender) for vc in msg.view_changes)
            return f"NewView(v{msg.view} vcs=[{senders}] from {msg.sender})"
        case m.Status():
            return f"Status(v{msg.view} h{msg.committed_height} from {msg.sender})"
        case m.TxBatch():
            return f"TxBatch({len(msg.txs)} txs from {msg.sender})"
        case m.BlockRequest():
            hashes = ",".join(short(d) for d in msg.hashes)
            return f"BlockRequest([{hashes}] from {msg.sender})"
        case m.BlockReply():
            return f"BlockReply(h{msg.block.height} {short(msg.block.hash)} from {msg.sender})"


def describe_event(event: Event) -> str:
    match event:
        case Start():
            return "Start"
        case Received():
            return describe_message(event.message)
        case Timeout():
            return f"Timeout({event.timer.value})"
        case ClientTxs():
            return f"ClientTxs({len(event.txs)}{' relayed' if event.relayed else ''})"
        case BlocksFetched():
            heights = [b.height for b, _ in event.blocks]
            span = f"h{heights[0]}..h{heights[-1]}" if heights else "none"
            return f"BlocksFetched(from {event.peer}: {span})"


def describe_action(action: Action) -> str:
    match action:
        case Send():
            return f"send {describe_message(action.message)} to {action.to}"
        case Broadcast():
            return f"broadcast {describe_message(action.message)}"
        case Persist():
            return f"persist {len(action.puts)} puts {len(action.deletes)} deletes"
        case CommitBlock():
            b = action.block
            return f"COMMIT h{b.height} {short(b.hash)} v{b.header.view} txs={len(b.txs)}"
        case SetTimer():
            return f"set timer {action.timer.value} at {action.at_ms}"
        case CancelTimer():
            return f"cancel timer {action.timer.value}"
        case FetchBlocks():
            return f"fetch h{action.from_height}..h{action.to_height} from {action.peer}"
    return repr(action)


Entry = tuple[int, str, object]


class Trace:
    def __init__(self, lines_max: int = TRACE_LINES_MAX) -> None:
        self._entries: deque[Entry] = deque(maxlen=lines_max)

    def note(self, now_ms: int, where: str, what: object) -> None:
        """Record `what` (a str, an Event, an Action or a Message) at `where` (e.g. 'n2')."""
        self._entries.append((now_ms, where, what))

    def tail(self, lines: int) -> list[str]:
        entries = list(self._entries)[-lines:]
        return [f"{t:>8}ms {where:<6} {_render(what)}" for t, where, what in entries]


def _render(what: object) -> str:
    if isinstance(what, str):
        return what
    if isinstance(what, Start | Received | Timeout | ClientTxs | BlocksFetched):
        return "<- " + describe_event(what)
    if isinstance(
        what, Send | Broadcast | Persist | CommitBlock | SetTimer | CancelTimer | FetchBlocks
    ):
        return "-> " + describe_action(what)
    if isinstance(
        what,
        m.PrePrepare
        | m.Prepare
        | m.Commit
        | m.Checkpoint
        | m.ViewChange
        | m.NewView
        | m.Status
        | m.TxBatch,
    ):
        return describe_message(what)
    return repr(what)
