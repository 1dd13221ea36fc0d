"""A userspace TCP relay between node namespaces: delay, reordering and connection loss.

The kernel of our CI machine has no netem qdisc, so what `tc netem` would do to packets this
relay does to the byte streams between nodes (see netns.py for where it sits). It listens on
every node's relay address; a connection from node a to node b's relay address is relayed to
node b, and the bytes of each direction are held back by the link's delay before they are
written on:

- delay: every chunk waits `delay_ms` (uniform in [low, high]); with probability `spike` a
  chunk waits `spike_ms` more. A stream stays in order (it is TCP), but chunks of different
  connections overtake each other, so messages between different pairs of nodes, and the
  requests of one pair on different connections, arrive reordered;
- loss: with probability `loss` per chunk the connection is cut (both legs aborted), and what
  was in flight on it is lost, as a dropped message is: the peer transport counts the failed
  request and consensus retransmits by its own timers.

Everything is seeded (`random.Random(seed)`) and bounded: chunks are at most 64 KiB, queued
bytes per direction are bounded, and `close` aborts every connection.
"""

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

CHUNK_BYTES: Final = 64 * 1024
QUEUE_CHUNKS_MAX: Final = 256  # chunks held per direction of one connection (16 MiB)
CONNECT_TIMEOUT_S: Final = 5.0


@dataclass
class LinkFaults:
    delay_ms: tuple[float, float] = (0.0, 0.0)
    spike: float = 0.0
    spike_ms: float = 0.0
    loss: float = 0.0


@dataclass
class Relay:
    n: int
    port: int
    relay_address: Callable[[int], str]
    node_address: Callable[[int], str]
    seed: int
    faults: LinkFaults = field(default_factory=LinkFaults)
    stats: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(init=False)
    _servers: list[asyncio.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _arrived: int = 0  # chunks read so far, all connections: a chunk's arrival number
    _delivered_max: int = 0  # the highest arrival number written on so far

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._sources = {self.node_address(i): i for i in range(self.n)}

    async def start(self) -> None:
        for j in range(self.n):
            server = await asyncio.start_server(
                lambda r, w, j=j: self._accept(r, w, j), self.relay_address(j), self.port
            )
            self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, j: int) -> None:
        self._spawn(self._relay(reader, writer, j))

    async def _relay(
        self, a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter, j: int
    ) -> None:
        peer = a_writer.get_extra_info("peername")
        source = self._sources.get(peer[0] if peer else "", -1)
        self._writers.add(a_writer)
        try:
            b_reader, b_writer = await asyncio.wait_for(
                asyncio.open_connection(self.node_address(j), self.port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self.stats["connect failed"] += 1
            a_writer.transport.abort()
            self._writers.discard(a_writer)
            return
        self._writers.add(b_writer)
        self.stats[f"connections {source}->{j}"] += 1
        cut = asyncio.Event()
        legs = [
            asyncio.ensure_future(self._direction(a_reader, b_writer, cut)),
            asyncio.ensure_future(self._direction(b_reader, a_writer, cut)),
        ]
        try:
            await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            if cut.is_set():
                a_writer.transport.abort()
                b_writer.transport.abort()
            await asyncio.wait(legs)
        finally:
            for leg in legs:
                leg.cancel()
            for w in (a_writer, b_writer):
                w.transport.abort()
                self._writers.discard(w)

    async def _direction(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event
    ) -> None:
        """Read chunks, hold each back by the link's delay (in order), write them on."""
        queue: asyncio.Queue[tuple[float, int, bytes]] = asyncio.Queue(QUEUE_CHUNKS_MAX)
        loop = asyncio.get_running_loop()
        sender = asyncio.ensure_future(self._deliver(queue, writer))
        due = 0.0
        try:
            while not cut.is_set():
                chunk = await reader.read(CHUNK_BYTES)
                if not chunk:
                    break
                f = self.faults
                if f.loss and self._rng.random() < f.loss:
                    self.stats["connections cut (loss)"] += 1
                    cut.set()
                    break
                delay = self._rng.uniform(*f.delay_ms)
                if f.spike and self._rng.random() < f.spike:
                    delay += f.spike_ms
                    self.stats["delay spikes"] += 1
                due = max(due, loop.time() + delay / 1000)
                self.stats["chunks"] += 1
                self._arrived += 1
                await queue.put((due, self._arrived, chunk))
            await queue.put((due, 0, b""))
            await sender
        except (ConnectionError, OSError):
            cut.set()
        finally:
            sender.cancel()

    async def _deliver(
        self, queue: "asyncio.Queue[tuple[float, int, bytes]]", writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, arrival, chunk = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())  # the link's delay: what netem would do
            if not chunk:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            if arrival < self._delivered_max:
                self.stats["chunks overtaken"] += 1  # a later chunk went out first: reordered
            self._delivered_max = max(self._delivered_max, arrival)
            writer.write(chunk)
            await writer.drain()
