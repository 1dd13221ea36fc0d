"""Chromium loads a node's pages over the node's own TLS certificate (ECDSA P-256, issued by the
validator's Ed25519 key). The certificate chains to no public CA, so the browser is told to
trust exactly that key (`--ignore-certificate-errors-spki-list`, the SHA-256 of the
certificate's SubjectPublicKeyInfo, `tests.browser.trust_certificates`); without the pin it
shows a certificate error page (ERR_CERT_INVALID), never a handshake failure such as
ERR_SSL_VERSION_OR_CIPHER_MISMATCH. The browser is the shared one of `tests/browser.py`.
"""

import asyncio
from pathlib import Path

import pytest

from node import tls
from tests.browser import Browser, chromium_path, trust_certificates
from tests.node.test_tls import start_node, stop

BROWSER_CLOSE_S = 30.0
LOADED = "document.readyState === 'complete' && document.body !== null"

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (make test installs it as root)"
)


async def page_text(browser: Browser, url: str) -> str:
    await browser.call("Page.navigate", url=url)
    await browser.wait_for(f"location.href === {url!r} && {LOADED}")
    text: str = await browser.evaluate("document.documentElement.outerHTML")
    return text


async def test_chromium_loads_a_page_over_the_node_certificate(tmp_path: Path) -> None:
    running = await start_node(tmp_path)
    cert = tls.identity_files(tmp_path / "node0" / "data").cert_file
    url = f"https://127.0.0.1:{running.api}/v1/openapi.json"
    try:
        for pinned in (True, False):
            browser = await Browser.start(*([trust_certificates([cert])] if pinned else []))
            try:
                text = await page_text(browser, url) if pinned else await error_page(browser, url)
            finally:
                await asyncio.wait_for(browser.close(), BROWSER_CLOSE_S)
            assert "ERR_SSL_VERSION_OR_CIPHER_MISMATCH" not in text
            if pinned:
                assert '"openapi"' in text, text[:300]
            else:  # the pin, not luck, made the page load: a certificate error, after a handshake
                assert '"openapi"' not in text
                assert "ERR_CERT_" in text, text[:300]
    finally:
        await stop(running)


async def error_page(browser: Browser, url: str) -> str:
    """What Chromium shows for `url` when it refuses the certificate (an interstitial page)."""
    await browser.call("Page.navigate", url=url)
    text: str = await browser.wait_for(
        "document.documentElement.outerHTML.includes('ERR_') && document.documentElement.outerHTML"
    )
    return text
