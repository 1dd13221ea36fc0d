"""Free TCP ports for local clusters (the demo, the tests, the benchmarks): the one helper.

Ports are drawn below the kernel's ephemeral range. A port the kernel hands out for `bind(0)`
comes from that range, which is also where every outgoing connection takes its local port: a
node dialling a peer that is not up yet may take the very port that peer is about to bind. Below
the range, only a listener takes a port. Each pick is checked by binding it (and released at
once, so the caller's node binds it seconds later; a port taken meanwhile fails the start with
a clear error, never silently).
"""

import contextlib
import random
import socket
from pathlib import Path
from typing import Final

PORT_LOW: Final = 20_000  # above the well-known and registered ports that services use
PORT_HIGH_MAX: Final = 32_000  # below Linux's default ephemeral range (32768-60999)
EPHEMERAL_RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
PICK_TRIES_MAX: Final = 2000


def port_high() -> int:
    """The first port not to use: the ephemeral range's start, if this kernel says it, and
    `PORT_HIGH_MAX` at most."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
        if low > PORT_LOW + 1000:
            return min(low, PORT_HIGH_MAX)
    return PORT_HIGH_MAX


def free_ports(count: int, host: str = "127.0.0.1", *, consecutive: bool = False) -> list[int]:
    """`count` distinct ports free on `host` right now, below the ephemeral range; with
    `consecutive`, P..P+count-1 (for `cluster init --base-port`)."""
    assert count >= 1
    rng = random.Random()  # noqa: S311 - spreading picks, not a secret
    high = port_high()
    for _ in range(PICK_TRIES_MAX):
        if consecutive:
            base = rng.randrange(PORT_LOW, high - count)
            picks = list(range(base, base + count))
        else:
            picks = rng.sample(range(PORT_LOW, high), count)
        if _all_free(picks, host):
            return picks
    raise OSError(f"no {count} free ports on {host} in {PORT_LOW}-{high - 1}")


def free_base_port(count: int, host: str = "127.0.0.1") -> int:
    """A port P such that P..P+count-1 are free on `host` right now."""
    return free_ports(count, host, consecutive=True)[0]


def _all_free(ports: list[int], host: str) -> bool:
    with contextlib.ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True
