"""Warnings and errors: one line per cause per interval, with the count of those dropped."""

import io
import json
import logging
import time
from collections.abc import Callable

from node.main import JsonFormatter
from node.ratelog import RateLimit


def _logger(
    interval_s: float, clock: Callable[[], float] = time.monotonic
) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RateLimit(interval_s, clock))
    log = logging.getLogger(f"test.ratelog.{interval_s}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, out


def test_one_line_per_cause_per_interval() -> None:
    log, out = _logger(3600.0)
    for i in range(1000):
        log.error("store error on %s: %s", f"/v1/history/{i}", "damaged")
        log.warning("peer %d unreachable", i % 3)
        log.info("view change to %d", i)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["level"] for line in lines if line["level"] != "info"] == ["error", "warning"]
    assert sum(line["level"] == "info" for line in lines) == 1000


def test_the_next_line_after_the_interval_counts_the_dropped_ones() -> None:
    now = [0.0]
    log, out = _logger(10.0, lambda: now[0])
    for second in range(25):  # one error a millisecond for 25 simulated seconds
        for ms in range(1000):
            now[0] = second + ms / 1000
            log.error("accept failed: %s", "EMFILE")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3  # at 0 s, 10 s and 20 s
    assert [line.get("suppressed") for line in lines] == [None, 9999, 9999]
