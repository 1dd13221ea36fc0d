"""Network namespaces for the network-fault tests: one namespace per node, veth pairs, routes.

Topology (every address is one of our own veths; nothing is routed anywhere else):

    namespace clfault-<i>                      root namespace (this test process)
    +----------------------------+             +-------------------------------------+
    | node i listens on          |   veth      | clfault<i>: 10.77.<i+1>.1/24        |
    | 10.77.<i+1>.2:PORT ("data")|-------------| the relay listens here for node i   |
    | 10.77.0.0/16 via .1        |             | 10.77.0.0/16 unreachable (a guard)  |
    +----------------------------+             +-------------------------------------+

The genesis names node j by its relay address `https://10.77.<j+1>.1:PORT`, so every byte
between two nodes crosses `relay.Relay` in this process (delay, connection loss, reordering:
the kernel here has no netem qdisc). The test reaches node i directly at 10.77.<i+1>.2. A
partition is kernel-level: blackhole routes inside the namespaces of both sides to the other
side's relay addresses.

Runs are serialised by a lock file; whatever a crashed run left (namespaces named
`clfault-*` and the processes in them, links named `clfault*`, the guard route) is removed
before a new topology is made and again in `destroy`, which every test calls in a finally.
"""

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

PREFIX: Final = "clfault"
SUBNET: Final = "10.77.0.0/16"
LOCK_FILE: Final = Path("/tmp/cityledger-faults-netns.lock")
LOCK_TIMEOUT_S: Final = 300.0
IP_TIMEOUT_S: Final = 10.0


class Unavailable(Exception):
    """This machine does not let us make namespaces (the reason is the message)."""


def ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    command = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def tc(*args: str, namespace: str | None = None, check: bool = True) -> str:
    command = ["tc", *args] if namespace is None else ["tc", "-n", namespace, *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def namespace(i: int) -> str:
    return f"{PREFIX}-{i}"


def host_side(i: int) -> str:
    return f"{PREFIX}{i}"


def relay_address(i: int) -> str:
    return f"10.77.{i + 1}.1"


def node_address(i: int) -> str:
    return f"10.77.{i + 1}.2"


def check_available() -> None:
    """Raise `Unavailable` unless we are root with iproute2 and may create a namespace."""
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root (run as root, as CI here does)")
    if shutil.which("ip") is None:
        raise Unavailable("iproute2 (`ip`) is not installed")
    probe = f"{PREFIX}-probe"
    try:
        ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"`ip netns add` is not allowed here: {exc}") from None
    ip("netns", "del", probe, check=False)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One topology on this machine at a time (the address plan is fixed)."""
    with LOCK_FILE.open("a") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable("another fault run holds the namespaces") from None
                time.sleep(0.2)  # another run's topology is up: a bounded wait for its lock
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_leftovers() -> list[str]:
    """Delete what a crashed run of these tests left behind; what was removed."""
    removed = []
    names = [ln.split()[0] for ln in ip("netns", "list", check=False).splitlines() if ln.split()]
    ours = [name for name in names if name.startswith(PREFIX + "-")]
    for name in ours:
        _kill_inside(name)
    # Links first: deleting one end of a veth removes both at once, whereas a namespace is
    # torn down by the kernel in the background (its veth would linger for a moment).
    for name in _our_links():
        ip("link", "del", name, check=False)
        removed.append(f"link {name}")
    for name in ours:
        ip("netns", "del", name, check=False)
        removed.append(f"netns {name}")
    if f"unreachable {SUBNET}" in ip("route", "show", check=False):
        ip("route", "del", "unreachable", SUBNET, check=False)
        removed.append(f"route unreachable {SUBNET}")
    deadline = time.monotonic() + IP_TIMEOUT_S
    while _our_links() and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel finishing a namespace's teardown: a bounded poll
    return removed


def _our_links() -> list[str]:
    names = []
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(PREFIX):
                names.append(name)
    return names


def _kill_inside(name: str) -> None:
    """SIGKILL the processes still in one of our own leftover namespaces, by their PIDs."""
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Topology:
    """`n` namespaces joined to this one by veth pairs; `create` then always `destroy`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.blackholes: set[tuple[int, int]] = set()

    def create(self) -> None:
        for line in ip("route", "show", check=False).splitlines():
            if line.startswith("10.77."):
                raise Unavailable(f"10.77.0.0/16 is in use on this machine: {line}")
        # The guard first: until a veth is up, 10.77/16 is unreachable, never the default route.
        ip("route", "add", "unreachable", SUBNET)
        for i in range(self.n):
            ns, host = namespace(i), host_side(i)
            ip("netns", "add", ns)
            ip("link", "add", host, "type", "veth", "peer", "name", "data", "netns", ns)
            ip("addr", "add", f"{relay_address(i)}/24", "dev", host)
            ip("link", "set", host, "up")
            ip("link", "set", "lo", "up", namespace=ns)
            ip("addr", "add", f"{node_address(i)}/24", "dev", "data", namespace=ns)
            ip("link", "set", "data", "up", namespace=ns)
            ip("route", "add", SUBNET, "via", relay_address(i), namespace=ns)
        for i in range(self.n):
            route = ip("route", "get", node_address(i))
            assert f"dev {host_side(i)}" in route, f"{node_address(i)} is not on our veth: {route}"

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", namespace(i)]

    def partition(self, side: Iterable[int]) -> None:
        """Cut `side` off from every other node, in both directions (kernel blackhole routes
        in the namespaces; the test's own path to each node stays up)."""
        inside = set(side)
        outside = set(range(self.n)) - inside
        for a in inside:
            for b in outside:
                for src, dst in ((a, b), (b, a)):
                    ip("route", "add", "blackhole", f"{relay_address(dst)}/32",
                       namespace=namespace(src))  # fmt: skip
                    self.blackholes.add((src, dst))

    def heal(self) -> None:
        for src, dst in sorted(self.blackholes):
            ip("route", "del", "blackhole", f"{relay_address(dst)}/32", namespace=namespace(src),
               check=False)  # fmt: skip
        self.blackholes.clear()

    def slow_link(self, i: int, rate: str, latency: str) -> None:
        """Throttle node i's link both ways: the packets arriving at each end of its veth are
        redirected (tc mirred) to an ifb device whose token-bucket qdisc (tbf) queues them for
        at most `latency` and drops the rest: real kernel packet delay and loss, which TCP
        meets with retransmissions. (Shaping on the sending side instead would only slow the
        local sockets down, never drop.)"""
        for dev, ns in ((host_side(i), None), ("data", namespace(i))):
            ifb = f"{PREFIX}q{i}" if ns is None else "ifbq"
            ip("link", "add", ifb, "type", "ifb", namespace=ns)
            ip("link", "set", ifb, "up", namespace=ns)
            tc("qdisc", "add", "dev", ifb, "root", "tbf", "rate", rate, "burst", "4kb",
               "latency", latency, namespace=ns)  # fmt: skip
            tc("qdisc", "add", "dev", dev, "ingress", namespace=ns)
            tc("filter", "add", "dev", dev, "parent", "ffff:", "protocol", "ip", "u32",
               "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb,
               namespace=ns)  # fmt: skip

    def fast_link(self, i: int) -> int:
        """Undo `slow_link`; the packets its qdiscs dropped."""
        dropped = 0
        for dev, ns in ((host_side(i), None), ("data", namespace(i))):
            ifb = f"{PREFIX}q{i}" if ns is None else "ifbq"
            stats = tc("-s", "qdisc", "show", "dev", ifb, namespace=ns, check=False)
            dropped += sum(int(d) for d in re.findall(r"dropped (\d+)", stats))
            tc("qdisc", "del", "dev", dev, "ingress", namespace=ns, check=False)
            ip("link", "del", ifb, namespace=ns, check=False)
        return dropped

    def destroy(self) -> None:
        """Remove every namespace, veth and route we made (processes inside are killed)."""
        remove_leftovers()
