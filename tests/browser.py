"""A real headless Chromium for the tests, driven over the DevTools protocol (no driver needed).

`Browser.start()` runs Debian's `chromium` with a throw-away profile and a DevTools port it
picks itself, connects to its first page over a WebSocket (aiohttp), and offers the few calls
the page tests need: navigate, evaluate, set a file input, wait for a condition in the page.
Every wait is bounded; the browser process is stopped by its PID in `close`.
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import aiohttp

from node import tls

START_TIMEOUT_S: Final = 30.0
CALL_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.05
CHROMIUM: Final = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return next((p for name in CHROMIUM if (p := shutil.which(name))), None)


def trust_certificates(cert_files: Iterable[Path]) -> str:
    """The switch that makes Chromium accept these certificates' keys (and only these) for TLS:
    nodes present certificates issued by their validator keys, which chain to no public CA
    (docs/protocol.md 17.5). The pin is the base64 SHA-256 of each SubjectPublicKeyInfo."""
    pins = [base64.b64encode(tls.spki_sha256(p.read_bytes())).decode() for p in cert_files]
    return "--ignore-certificate-errors-spki-list=" + ",".join(pins)


def node_certificates(root: Path) -> list[Path]:
    """The node certificates of a `cluster init` network's running nodes."""
    return sorted(root.glob(f"nodes/*/data/{tls.TLS_CERT_FILE}"))


class BrowserError(Exception):
    """The page threw, or a DevTools call failed."""


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, profile: Path) -> None:
        self.proc = proc
        self.profile = profile
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    @classmethod
    async def start(cls, *flags: str) -> "Browser":
        """`flags`: more command-line switches, e.g. `trust_certificates(...)`."""
        path = chromium_path()
        assert path is not None, "no chromium on this machine (make test installs it as root)"
        profile = Path(tempfile.mkdtemp(prefix="cityledger-chromium-"))
        proc = await asyncio.create_subprocess_exec(
            path, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", *flags, "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        browser = cls(proc, profile)
        try:
            await asyncio.wait_for(browser._connect(), START_TIMEOUT_S)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _connect(self) -> None:
        port_file = self.profile / "DevToolsActivePort"
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.returncode is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}")
            await asyncio.sleep(POLL_S)
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession()
        while True:
            async with self._http.get(f"http://127.0.0.1:{port}/json/list") as r:
                pages = [t for t in await r.json() if t.get("type") == "page"]
            if pages:
                break
            await asyncio.sleep(POLL_S)
        self._ws = await self._http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are ignored)."""
        assert self._ws is not None
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(self._ws.receive(), CALL_TIMEOUT_S)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"the DevTools connection ended: {message.type}")
            doc = json.loads(message.data)
            if doc.get("id") == ident:
                if "error" in doc:
                    raise BrowserError(f"{method}: {doc['error']}")
                result: dict[str, Any] = doc.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str, ready: str) -> None:
        """Open `url` and wait until the expression `ready` is true in the page."""
        await self.call("Page.navigate", url=url)
        await self.wait_for(ready)

    async def wait_for(self, expression: str, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        """Poll `expression` in the page until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            with contextlib.suppress(BrowserError):  # the page may be between documents
                value = await self.evaluate(expression)
                if value:
                    return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the page never made {expression!r} true")
            await asyncio.sleep(POLL_S)

    async def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in a file input, as a user picking them would. DOM node ids last as
        long as their document: one the page replaced between two calls (a navigation, a
        re-render) is asked for again, until the input is there or CALL_TIMEOUT_S passed."""
        deadline = asyncio.get_running_loop().time() + CALL_TIMEOUT_S
        while True:
            with contextlib.suppress(BrowserError):  # the node ids of a replaced document
                root = await self.call("DOM.getDocument")
                found = await self.call(
                    "DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector
                )
                if found.get("nodeId"):  # 0: not in the document (yet)
                    files = [str(p) for p in paths]
                    await self.call("DOM.setFileInputFiles", files=files, nodeId=found["nodeId"])
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no file input {selector!r} in the page")
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc.returncode is None:
            # By id: the process group this object started (the browser and its helpers).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), START_TIMEOUT_S)
        shutil.rmtree(self.profile, ignore_errors=True)
