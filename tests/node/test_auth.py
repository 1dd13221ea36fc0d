"""Authentication and read access on a real node (loopback): every refusal code of a signed
request, read policies and public namespaces, the auditor role, and browser sessions signed in
with a challenge (docs/protocol.md section 16)."""

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ledger import crypto
from ledger import genesis as genesis_mod
from ledger.errors import InvalidGenesis
from node import auth, auth_sessions
from node import auth_request as wire
from node.codec import ApiError
from tests import factory
from tests.node.conftest import (
    VALIDATOR0,
    WAIT_S,
    Cluster,
    client_tls,
    now_ms,
    signed_as,
    start_cluster,
    stop_all,
    tx_json,
)

AUDITOR_KEY = factory.seeded_key("testcity/client/auditor")
ACCESS = {
    "public_namespaces": ["permits/"],
    "read_policies": [{"organisation": "City Finance Bureau", "namespaces": ["claims/"]}],
}
FISCAL, CLAIMS, POLICIES, PERMITS = (
    "fiscal-clerk0",
    "claims-clerk0",
    "policies-clerk0",
    "permits-clerk0",
)


def with_auditor(doc: dict[str, Any]) -> dict[str, Any]:
    auditor = {"id": "auditor", "organisation": "City Audit Office", "role": "auditor",
               "public_key": crypto.public_key_bytes(AUDITOR_KEY).hex()}  # fmt: skip
    return {**ACCESS, "clients": [*doc["clients"], auditor]}


@pytest.fixture
async def access(tmp_path: Path) -> AsyncIterator[Cluster]:
    """One validator; an auditor; `permits/` public; finance also reads `claims/`."""
    cluster = await start_cluster(
        tmp_path, 1, genesis_extra=with_auditor(factory.network(1).genesis.to_dict())
    )
    try:
        yield cluster
    finally:
        await stop_all(cluster)


def as_client(c: Cluster, client_id: str) -> Any:
    key = AUDITOR_KEY if client_id == "auditor" else c.net.client_keys[client_id]
    return signed_as(client_id, key)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, mw: Any = (), **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, url, middlewares=mw, **kw) as r:
        if r.content_type != "application/json":
            return r.status, await r.text()
        return r.status, await r.json()


async def committed(c: Cluster, http: aiohttp.ClientSession) -> dict[str, str]:
    """One record in each of fiscal/, claims/, policies/ and permits/; their tx ids by prefix."""
    out = {}
    for ns in ("fiscal/", "claims/", "policies/", "permits/"):
        tx = c.tx(ns, "r/1", {"v": 1})
        status, body = await call(http, "POST", c.url(0) + "/v1/transactions?wait=true",
                                  VALIDATOR0, json=tx_json(tx))  # fmt: skip
        assert status == 200, body
        out[ns] = tx.tx_id.hex()
    return out


async def test_reads_follow_identity_role_and_read_policy(
    access: Cluster, anonymous: aiohttp.ClientSession
) -> None:
    c, http = access, anonymous
    ids = await committed(c, http)
    url = c.url(0)
    cases = [  # (who, path, status)
        (None, "/v1/status", 401), (None, "/v1/records/fiscal/r/1", 401),
        (None, "/v1/history/claims/r/1", 401), (None, "/v1/blocks/1", 401),
        (None, f"/v1/transactions/{ids['fiscal/']}", 401),
        (None, "/v1/records/permits/r/1", 200), (None, "/v1/history/permits/r/1", 200),
        (None, "/v1/records/permits/none", 404), (None, "/v1/openapi.json", 200),
        (None, "/v1/auth/challenge", 200), (None, "/explorer/", 200),
        (FISCAL, "/v1/records/fiscal/r/1", 200), (FISCAL, "/v1/records/claims/r/1", 200),
        (FISCAL, "/v1/records/policies/r/1", 403), (FISCAL, "/v1/records/policies/none", 403),
        (FISCAL, "/v1/records/permits/r/1", 200), (FISCAL, "/v1/blocks/1", 403),
        (FISCAL, "/v1/blocks/latest", 403), (FISCAL, "/v1/status", 200),
        (FISCAL, f"/v1/transactions/{ids['claims/']}/proof", 200),
        (FISCAL, f"/v1/transactions/{ids['policies/']}/proof", 403),
        (FISCAL, f"/v1/transactions/{ids['policies/']}", 403),
        (CLAIMS, "/v1/records/fiscal/r/1", 403), (CLAIMS, "/v1/history/claims/r/1", 200),
        ("auditor", "/v1/blocks/1", 200), ("auditor", "/v1/records/policies/r/1", 200),
        ("auditor", f"/v1/transactions/{ids['policies/']}/proof", 200),
        ("node0", "/v1/blocks/latest", 200),
        (None, "/v1/chain?from=1", 401), (FISCAL, "/v1/chain?from=1", 403),
        ("auditor", "/v1/chain?from=1", 200), ("node0", "/v1/chain?from=1&to=1", 200),
        (None, "/v1/checkpoint/stable", 401),
    ]  # fmt: skip
    got = []
    for who, path, _ in cases:
        mw = () if who is None else VALIDATOR0 if who == "node0" else as_client(c, who)
        status, body = await call(http, "GET", url + path, mw)
        got.append((who, path, status))
        if status in (401, 403):
            assert set(body) >= {"error", "reason"}, body
    assert got == cases
    status, who = await call(http, "GET", url + "/v1/auth/session", as_client(c, CLAIMS))
    assert (status, who["role"], who["reads"]) == (200, "clerk", ["claims/"])


async def test_an_auditor_writes_nothing(access: Cluster, anonymous: aiohttp.ClientSession) -> None:
    tx = factory.Network(access.genesis, [], {"auditor": AUDITOR_KEY}).tx(
        "auditor", "fiscal/audit/1", {"note": "x"}, now_ms()
    )
    status, body = await call(anonymous, "POST", access.url(0) + "/v1/transactions",
                              as_client(access, "auditor"), json=tx_json(tx))  # fmt: skip
    assert (status, body["error"]) == (403, "forbidden_namespace")
    assert "is an auditor" in body["reason"]
    status, body = await call(anonymous, "POST", access.url(0) + "/v1/transactions",
                              json=tx_json(tx))  # fmt: skip
    assert (status, body["error"]) == (401, auth.UNAUTHENTICATED)


async def test_every_bad_signed_request_is_refused_before_any_work(
    access: Cluster, anonymous: aiohttp.ClientSession
) -> None:
    url, target = access.url(0), "/v1/status"
    key = access.net.client_keys[FISCAL]

    def headers(**change: Any) -> dict[str, str]:
        args = {"chain_id": "testcity", "identity": FISCAL, "method": "GET", "target": target,
                "body": b"", "now_ms": now_ms(), "key": key} | change  # fmt: skip
        signing_key = args.pop("key")
        return dict(wire.sign_headers(signing_key, **args))

    good = headers()
    cases = {
        "missing one": ({k: v for k, v in good.items() if k != wire.NONCE_HEADER},
                        auth.BAD_AUTH),
        "unknown identity": (headers(identity="mallory"), auth.UNKNOWN_IDENTITY),
        "old": (headers(now_ms=now_ms() - auth.REQUEST_SKEW_MS - 5000), auth.STALE_REQUEST),
        "ahead": (headers(now_ms=now_ms() + auth.REQUEST_SKEW_MS + 5000), auth.STALE_REQUEST),
        "bad timestamp": (good | {wire.TIMESTAMP_HEADER: "-1"}, auth.BAD_AUTH),
        "short nonce": (good | {wire.NONCE_HEADER: "00"}, auth.BAD_AUTH),
        "not hex": (good | {wire.SIGNATURE_HEADER: "zz" * 64}, auth.BAD_AUTH),
        "other key": (headers(key=access.net.client_keys[CLAIMS]), auth.BAD_SIGNATURE),
        "other chain": (headers(chain_id="elsewhere"), auth.BAD_SIGNATURE),
        "other target": (headers(target="/v1/checkpoint"), auth.BAD_SIGNATURE),
        "other method": (headers(method="POST"), auth.BAD_SIGNATURE),
    }  # fmt: skip
    for name, (sent, code) in cases.items():
        status, body = await call(anonymous, "GET", url + target, headers=sent)
        assert (name, status, body["error"]) == (name, 401, code)
    status, _ = await call(anonymous, "GET", url + target, headers=good)
    assert status == 200
    status, body = await call(anonymous, "GET", url + target, headers=good)  # captured, replayed
    assert (status, body["error"]) == (401, auth.REPLAYED)
    # A body other than the one signed: the signature covers its hash.
    tx = access.tx("fiscal/", "t/1", {"v": 1})
    signed = headers(method="POST", target="/v1/transactions", body=b"{}")
    status, body = await call(anonymous, "POST", url + "/v1/transactions",
                              headers=signed, json=tx_json(tx))  # fmt: skip
    assert (status, body["error"]) == (401, auth.BAD_SIGNATURE)
    assert access.node(0).runtime.replica.pending == 0  # nothing was admitted


async def sign_in(
    http: aiohttp.ClientSession, url: str, identity: str, key: Any, challenge: str | None = None
) -> tuple[int, dict[str, Any], str]:
    if challenge is None:
        _, issued = await call(http, "GET", url + "/v1/auth/challenge")
        challenge = issued["challenge"]
    payload = wire.session_payload("testcity", identity, bytes.fromhex(challenge))
    signature = crypto.sign(key, crypto.Domain.SESSION, payload).hex()
    doc = {"identity": identity, "challenge": challenge, "signature": signature}
    async with http.post(url + "/v1/auth/session", json=doc) as r:
        body = await r.json()
        body["set-cookie"] = r.headers.get("Set-Cookie", "")
        return r.status, body, challenge


async def test_a_browser_session_reads_as_its_identity_and_writes_nothing(
    access: Cluster,
) -> None:
    url = access.url(0)
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP address host (127.0.0.1)
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    connector = aiohttp.TCPConnector(ssl=client_tls())
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=jar
    ) as browser:
        await committed(access, browser)
        status, session, challenge = await sign_in(browser, url, FISCAL,
                                                   access.net.client_keys[FISCAL])  # fmt: skip
        assert status == 200, session
        assert (session["identity"], session["role"]) == (FISCAL, "clerk")
        assert session["reads"] == ["fiscal/", "claims/"]
        cookie = session["set-cookie"].split("; ")
        assert cookie[0].startswith(auth_sessions.COOKIE + "=")
        assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"} <= set(cookie)
        for path, expected in (
            ("/v1/records/fiscal/r/1", 200),
            ("/v1/records/claims/r/1", 200),
            ("/v1/records/policies/r/1", 403),
            ("/v1/blocks/1", 403),
        ):
            assert (await call(browser, "GET", url + path))[0] == expected, path
        tx = access.tx("fiscal/", "s/1", {"v": 1})
        status, body = await call(browser, "POST", url + "/v1/transactions", json=tx_json(tx))
        assert (status, body["error"]) == (401, auth.UNAUTHENTICATED)  # sessions only read
        status, body, _ = await sign_in(browser, url, FISCAL, access.net.client_keys[FISCAL],
                                        challenge)  # fmt: skip
        assert (status, body["error"]) == (401, auth.REPLAYED)
        status, body, _ = await sign_in(browser, url, FISCAL, access.net.client_keys[CLAIMS])
        assert (status, body["error"]) == (401, auth.BAD_SIGNATURE)
        forged = "00" * auth_sessions.CHALLENGE_BYTES
        status, body, _ = await sign_in(browser, url, FISCAL, access.net.client_keys[FISCAL],
                                        forged)  # fmt: skip
        assert (status, body["error"]) == (401, auth.BAD_AUTH)
        async with browser.delete(url + "/v1/auth/session") as r:
            assert r.status == 204
        assert (await call(browser, "GET", url + "/v1/records/fiscal/r/1"))[0] == 401


def test_sessions_and_replays_are_bounded() -> None:
    clock = [1_000_000]
    doc = factory.network(1).genesis.to_dict()
    genesis = genesis_mod.from_dict(doc | with_auditor(doc))
    gate = auth.Gate(genesis, lambda: clock[0], 1024)
    sessions = auth_sessions.Sessions(gate, lambda: clock[0])
    tokens = set()
    for _ in range(auth_sessions.SESSIONS_PER_IDENTITY_MAX + 3):
        challenge = sessions.challenge()
        payload = wire.session_payload("testcity", "auditor", challenge)
        token, _ = sessions.open(
            "auditor", challenge, crypto.sign(AUDITOR_KEY, crypto.Domain.SESSION, payload)
        )
        tokens.add(token)
    assert len(tokens) == auth_sessions.SESSIONS_PER_IDENTITY_MAX + 3
    assert len(sessions) == auth_sessions.SESSIONS_PER_IDENTITY_MAX  # the oldest were ended
    challenge = sessions.challenge()
    clock[0] += auth_sessions.CHALLENGE_TTL_MS + 1
    with pytest.raises(ApiError) as stale:
        sessions.open("auditor", challenge, b"\0" * 64)
    assert stale.value.code == auth.STALE_REQUEST
    cache = auth.ReplayCache(capacity=3)
    for i in range(3):
        cache.add(bytes([i]), expires_ms=100, now_ms=0)
    with pytest.raises(ApiError) as full:
        cache.add(b"x", expires_ms=100, now_ms=50)
    assert full.value.status == 503
    cache.add(b"x", expires_ms=300, now_ms=200)  # the expired ones are gone first
    assert len(cache) == 1
    assert cache.seen(b"x")
    assert not cache.seen(bytes([0]))


def test_the_documented_example_signature() -> None:
    key = factory.seeded_key("testcity/client/fiscal-clerk0")
    headers = wire.sign_headers(
        key, chain_id="testcity", identity="fiscal-clerk0", method="POST",
        target="/v1/transactions?wait=true", body=b'{"raw":"00"}', now_ms=1767225600000,
        nonce=bytes(range(16)),
    )  # fmt: skip
    assert headers[wire.SIGNATURE_HEADER] == (
        "302a65f9abdf58df6b46bbb5af500fb5c39acd97878ac8fef94987919c7f97dc"
        "e62cec9ab7010490b0d9cc3e2a2543bdc575b6232b9026900840f7c34570fb01"
    )
    assert crypto.Domain.REQUEST.value.hex() == "636974796c65646765722f726571756573742f763100"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"read_policies": [{"organisation": "Nobody", "namespaces": ["fiscal/"]}]},
         "read_policies: organisation 'Nobody' has no validator or client"),
        ({"read_policies": [{"organisation": "City Finance Bureau", "namespaces": ["x"]}]},
         "read_policies[0].namespaces: expected prefixes"),
        ({"public_namespaces": ["fiscal"]}, "public_namespaces: expected prefixes"),
        ({"public_namespaces": "permits/"}, "public_namespaces: expected prefixes"),
    ],
)  # fmt: skip
def test_bad_read_policies_are_refused(change: dict[str, Any], problem: str) -> None:
    doc = factory.network(1).genesis.to_dict() | change
    with pytest.raises(InvalidGenesis) as exc:
        genesis_mod.from_dict(doc)
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_roles_and_ids_are_checked_and_hashed() -> None:
    doc = factory.network(1).genesis.to_dict()
    plain = genesis_mod.from_dict(doc)
    clerk, others = dict(doc["clients"][0]), doc["clients"][1:]
    for bad, problem in (
        ({**clerk, "role": "mayor"}, "clients[0].role: expected one of clerk, auditor"),
        ({**clerk, "id": "node0"}, "clients: id 'node0' is also a validator's"),
    ):
        with pytest.raises(InvalidGenesis) as exc:
            genesis_mod.from_dict(doc | {"clients": [bad, *others]})
        assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems
    explicit = genesis_mod.from_dict(doc | {"clients": [{**clerk, "role": "clerk"}, *others]})
    assert explicit.hash == plain.hash  # the default role is not written into the content
    auditor = genesis_mod.from_dict(doc | {"clients": [{**clerk, "role": "auditor"}, *others]})
    public = genesis_mod.from_dict(doc | {"public_namespaces": ["permits/"]})
    assert len({plain.hash, auditor.hash, public.hash}) == 3
    full = genesis_mod.from_dict(doc | with_auditor(doc))
    assert genesis_mod.from_dict(tomllib.loads(genesis_mod.dump_toml(full))) == full
    assert genesis_mod.from_dict(tomllib.loads(genesis_mod.dump_toml(full))).hash == full.hash
