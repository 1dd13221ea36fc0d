"""`cityledger node run CONFIG.toml`: one node process, until SIGTERM or SIGINT.

Sets up structured (JSON lines) logging, the event loop and the signal handlers, then runs a
`Node` until told to stop or until its replica or store fails (then it stops and raises, so
the process exits non-zero). A bad config raises `ConfigError` before anything starts; the CLI
prints it.
"""

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, Final

from node.config import Config, Identity, load, load_identity
from node.ratelog import RateLimit
from node.service import Node

_STANDARD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime",
}  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


GC_YOUNG_OBJECTS: Final = 20_000  # net new container objects before a young collection


def tune_collector() -> None:
    """Keep Python's cyclic garbage collector from stalling the event loop (every vote waits
    for it). A node's objects (txs, messages, requests) die by reference counting; with the
    default threshold of 700 the collector ran every few milliseconds under load, and each
    full collection walked the whole pool of pending txs (over 100 ms, measured). The objects
    of start-up (modules, genesis, keys) are frozen out of every collection; young
    collections wait for 20,000 net new objects, older generations keep their ratios."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_OBJECTS, middle, old)


# How long a thread holds the GIL before one that waits for it may take it (CPython's default:
# 5 ms). The event loop carries consensus; the verify threads check signatures (cryptography's
# Ed25519 holds the GIL) and the read thread builds answers. At 5 ms the loop waited up to that
# long each time it took the GIL back, many times per commit, while a flood of bad signatures
# kept the threads busy; at 1 ms it gets it back sooner, for a few more switches a second.
GIL_SWITCH_INTERVAL_S: Final = 0.001


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimit())  # one line per cause per interval for warnings and errors
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("cityledger.node")


async def serve(config: Config, identity: Identity | None = None) -> None:
    """Run one node until SIGTERM/SIGINT (clean stop) or a failure (stop, then raise). Meant
    for a process's main thread: it owns the process's SIGTERM and SIGINT from here on.

    The handlers are in place before the node starts, and a signal is never again left to its
    default action: one during the start stops the node as soon as it has started; one during
    the (bounded) graceful stop is logged and changes nothing; one after it is ignored while
    the process exits. Were the default action back at any point, a repeated signal (a
    supervisor repeating its SIGTERM, a second Ctrl-C) could kill the process halfway through
    closing its store."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        extra = {"node_id": config.node_id, "signal": sig.name}
        log.info("already stopping" if stop.is_set() else "stopping", extra=extra)
        stop.set()

    def handler(signum: int, _frame: FrameType | None) -> None:  # runs between bytecodes
        loop.call_soon_threadsafe(on_signal, signal.Signals(signum))

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    node = Node(config, identity or load_identity(config))
    try:
        # A validator that syncs before it joins starts only once synced: a signal stops that.
        stopped = asyncio.ensure_future(stop.wait())
        starting = asyncio.ensure_future(node.start())
        await asyncio.wait([stopped, starting], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        tune_collector()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        failed = asyncio.ensure_future(node.failed.wait())
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    finally:
        stop.set()  # from here on a signal only says that the node is already stopping
        try:
            await node.stop()
        finally:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)  # stopped: the process only exits now
    if node.failure is not None:
        raise RuntimeError(f"node {config.node_id} failed: {node.failure!r}") from node.failure


def run(config_path: Path) -> None:
    """Blocking entry point for `cityledger node run` (raises `ConfigError` on a bad config)."""
    config = load(config_path)
    identity = load_identity(config)  # a key or passphrase mistake stops it before any log line
    setup_logging(config.log_level)
    asyncio.run(serve(config, identity))
