"""The limits a connection meets before authentication, as pure rules (node.limits)."""

from node import limits as lim

L = lim.Limits(header_timeout_ms=1000, body_timeout_ms=2000, body_rate_min=1000,
               header_bytes_max=1024)  # fmt: skip
GET = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes) -> bytes:
    return b"POST /v1/transactions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_whole_requests_in_any_pieces_leave_no_deadline() -> None:
    stream = GET + post(b"x" * 300) + GET
    for size in (1, 7, 64, len(stream)):
        f = lim.Framing(L, 0)
        for at in range(0, len(stream), size):
            assert f.feed(stream[at : at + size], 10) is None
        assert (f.requests, f.deadline_ms, f.in_headers) == (3, None, False)


def test_a_connection_that_sends_nothing_times_out_in_its_headers() -> None:
    f = lim.Framing(L, 0)
    assert f.in_headers
    assert f.expired(999) is None
    assert f.expired(1000) == lim.HEADER_TIMEOUT


def test_slowloris_headers_time_out_from_their_first_byte() -> None:
    f = lim.Framing(L, 0)
    assert f.feed(GET, 0) is None
    assert f.expired(10**9) is None  # answered, idle: aiohttp's keep-alive owns it
    assert f.feed(b"GET / HTTP/1.1\r\nX-a: 1\r\n", 5000) is None
    for t in range(5001, 5999, 100):
        assert f.feed(b"X-b: 2\r\n", t) is None
    assert f.expired(6000) == lim.HEADER_TIMEOUT


def test_header_blocks_are_bounded_in_bytes() -> None:
    f = lim.Framing(L, 0)
    assert f.feed(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 900 + b"\r\n", 0) is None
    assert f.feed(b"X-More: " + b"b" * 200 + b"\r\n", 0) == lim.HEADERS_TOO_LARGE
    whole = lim.Framing(L, 0)
    assert whole.feed(b"GET / HTTP/1.1\r\nX: " + b"c" * 1100 + b"\r\n\r\n", 0) == (
        lim.HEADERS_TOO_LARGE
    )


def test_half_sent_bodies_time_out_by_length_and_rate() -> None:
    f = lim.Framing(L, 0)
    assert f.feed(post(b"y" * 5000)[:-10], 0) is None
    assert f.expired(2000 + 5000 - 1) is None  # 2 s plus 5,000 bytes at 1,000 bytes/s
    assert f.expired(7000) == lim.BODY_TIMEOUT
    assert not f.in_headers


def test_chunked_bodies_need_a_length() -> None:
    f = lim.Framing(L, 0)
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert f.feed(head, 0) == lim.LENGTH_REQUIRED


def test_admission_caps_sources_and_replaces_the_longest_stalled() -> None:
    a = lim.Admission(cap=3, per_source=2)
    served = lim.Framing(L, 0)
    assert served.feed(GET, 0) is None  # a client that sent a whole request
    assert a.admit("peer", "10.0.0.1", served) == (None, None)
    assert a.admit("idle-old", "10.0.0.2", lim.Framing(L, 5)) == (None, None)
    assert a.admit("idle-new", "10.0.0.2", lim.Framing(L, 9)) == (None, None)
    assert a.admit("third", "10.0.0.2", lim.Framing(L, 10)) == (lim.TOO_MANY_FROM_SOURCE, None)
    assert a.admit("fresh", "10.0.0.3", lim.Framing(L, 11)) == (None, "idle-old")
    assert len(a) == 3
    a.remove("idle-new")
    a.remove("idle-new")  # twice is harmless
    assert a.admit("again", "10.0.0.2", lim.Framing(L, 12)) == (None, None)
    only_served = lim.Admission(cap=1, per_source=5)
    assert only_served.admit("peer", "10.0.0.1", served) == (None, None)
    assert only_served.admit("late", "10.0.0.9", lim.Framing(L, 20)) == (lim.TOO_MANY, None)
    assert [c for c, _ in a.expired(10**6)] == ["fresh", "again"]


def test_slots_have_a_ceiling() -> None:
    s = lim.Slots(2)
    assert (s.take(), s.take(), s.take()) == (True, True, False)
    s.give()
    assert s.take()
