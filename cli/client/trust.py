"""Which nodes a client trusts: the validators in force, learnt from the genesis alone.

Governance adds, removes and re-keys validators (docs/protocol.md 20.8), so the genesis's set
is only the first one. Before it trusts an https:// node, a client asks that node for
`GET /v1/config/proof` (14.6) over a TLS connection that authenticates nothing yet: the
answer carries its own proof, the certified governance txs of every change up to the node's
head, each certified by the validators in force before it. The client replays them against
the genesis with the ledger's own verifier (`ledger.proofs.verify_configs`) and then trusts
exactly the TLS anchors (17.3) of the validators in force after that head: an added validator
is reached, a removed one or a rotated-out key fails the handshake.

What was verified is kept for the process, per chain: the proof of the highest height wins (a
node behind, or one that leaves changes out, never takes the client back to an older set). It
is asked for again after `REFRESH_S`, or at once when a node's certificate is not one of the
set known (a validator added since). The limit is the one of every proof (14.5): a node that
leaves out the latest changes makes the set older, never one that governance did not make.
"""

import http.client
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import msgpack

from cli.client.errors import NodeUnreachable, NoTrust, unreachable
from ledger import proofs
from ledger.genesis import Genesis
from node import tls

CONFIG_PROOF_PATH: Final = "/v1/config/proof"
REFRESH_S: Final = 30.0  # a verified set is asked for again after this long
PROOF_BYTES_MAX: Final = 16 * 1024 * 1024  # an answer: governance blocks at a bundle's limits
CHAINS_MAX: Final = 4  # chains whose verified sets one process keeps
MSGPACK: Final = "application/msgpack"


@dataclass(frozen=True)
class Known:
    proven: proofs.ProvenConfigs
    asked_s: float  # when it was last asked for (monotonic)


_known: dict[bytes, Known] = {}
_lock = threading.Lock()


def _unverified() -> ssl.SSLContext:
    """TLS 1.3 that checks no certificate: only for the configuration proof, which proves
    itself; nothing else is ever sent over it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch(url: str, genesis: Genesis, timeout_s: float) -> proofs.ProvenConfigs:
    """Ask the node at `url` for its configuration proof and verify it against `genesis`.
    Raises `NodeUnreachable` without a usable answer, `NoTrust` for one that does not verify."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, timeout=timeout_s, context=_unverified())
        if parts.scheme == "https"
        else http.client.HTTPConnection(host, port, timeout=timeout_s)
    )
    try:
        conn.request("GET", parts.path + CONFIG_PROOF_PATH, headers={"Accept": MSGPACK})
        response = conn.getresponse()
        raw = response.read(PROOF_BYTES_MAX + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise unreachable(url, host, exc, timeout_s) from None
    finally:
        conn.close()
    if response.status != 200 or len(raw) > PROOF_BYTES_MAX:
        raise NodeUnreachable(
            f"the node at {url} did not answer {CONFIG_PROOF_PATH} (HTTP {response.status}): "
            "the validators in force cannot be learnt from it (is it a CityLedger node?)"
        )
    try:
        doc = msgpack.unpackb(raw, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise NodeUnreachable(
            f"the node at {url} answered {CONFIG_PROOF_PATH} with no msgpack (is it a CityLedger "
            "node?)"
        ) from None
    if isinstance(doc, dict) and doc.get("genesis_hash") != genesis.hash:
        raise NoTrust(
            f"the node at {url} is not a validator of the genesis given: it serves another "
            "chain (is --genesis the genesis of its chain?)"
        )
    try:
        return proofs.verify_configs(doc, genesis)
    except proofs.InvalidProof as exc:
        raise NoTrust(
            f"the node at {url} sent validators that the genesis does not prove: {exc}"
        ) from None


def learn(
    url: str, genesis: Genesis, timeout_s: float, *, force: bool = False
) -> proofs.ProvenConfigs:
    """The configurations proven for `genesis`'s chain: the ones known, unless there are none,
    they were asked for more than `REFRESH_S` ago, or `force`; then asked of `url` too."""
    now = time.monotonic()
    with _lock:
        known = _known.get(genesis.hash)
    if known is not None and not force and now - known.asked_s < REFRESH_S:
        return known.proven
    proven = fetch(url, genesis, timeout_s)
    with _lock:
        known = _known.get(genesis.hash)
        if known is not None and known.proven.height > proven.height:
            proven = known.proven  # never back to an older set
        _known.pop(genesis.hash, None)
        _known[genesis.hash] = Known(proven, now)
        for oldest in list(_known)[: max(0, len(_known) - CHAINS_MAX)]:
            del _known[oldest]
    return proven


def members(url: str, genesis: Genesis, timeout_s: float, *, force: bool = False) -> Genesis:
    """The members in force (validators with their keys and URLs) after the highest height
    proven for `genesis`'s chain."""
    return learn(url, genesis, timeout_s, force=force).current.members


def members_of_block(url: str, genesis: Genesis, timeout_s: float, height: int) -> Genesis:
    """The validator set of block `height` (the configuration in force after `height - 1`),
    proven from the genesis; asked of `url` again if the proof known stops below it. Raises
    `NoTrust` when no proof reaches it."""
    proven = learn(url, genesis, timeout_s)
    if proven.height < height - 1:
        proven = learn(url, genesis, timeout_s, force=True)
    if proven.height < height - 1:
        raise NoTrust(
            f"the node at {url} proves the validators up to block {proven.height} only, "
            f"not those of block {height}"
        )
    return proven.after(height - 1).members


def context(url: str, genesis: Genesis, timeout_s: float, *, force: bool = False) -> ssl.SSLContext:
    """A TLS context that trusts exactly the validators in force (see the module)."""
    return tls.client_context(tls.anchors_pem(members(url, genesis, timeout_s, force=force)))


def forget() -> None:
    """Drop every verified set (tests; a process that changes chains need not)."""
    with _lock:
        _known.clear()
