"""What the simulator's event queue holds: each entry is one thing that happens at a time.

Pure data; the simulator (tests/sim/simulator.py) owns the queue and carries each one out.
"""

from collections.abc import Callable
from dataclasses import dataclass

from consensus import messages as m
from consensus.events import FetchBlocks, Timer
from node.ordering import Write
from tests.sim.byzantine import Served


@dataclass(frozen=True)
class Deliver:
    to: int
    sender: int
    raw: bytes
    sent: int  # the number of this send on its link (sender, to): tells reordering apart


@dataclass(frozen=True)
class Fire:
    node: int
    timer: Timer
    token: int


@dataclass(frozen=True)
class Serve:
    node: int
    incarnation: int
    request: FetchBlocks
    peer: int  # the node number of the request's peer (its index in the requester's set)


@dataclass(frozen=True)
class Fetched:
    node: int
    incarnation: int
    peer: int
    blocks: Served


@dataclass(frozen=True)
class Written:
    node: int
    incarnation: int
    write: Write


@dataclass(frozen=True)
class ClientTick:
    pass


@dataclass(frozen=True)
class Call:
    label: str
    fn: Callable[[], None]


Item = Deliver | Fire | Serve | Fetched | Written | ClientTick | Call
DropRule = Callable[[int, int, m.Message], bool]  # (sender, receiver, message) -> drop it?
