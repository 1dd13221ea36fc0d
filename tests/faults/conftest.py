"""Fault tests on real node processes: the slow-variant switch, the cluster fixture, figures.

Short bounded variants run by default (inside `make test`); the long soaks run with
`pytest tests/faults --run-slow` or `CITYLEDGER_SLOW=1` in the environment (the variable works
from any pytest invocation; the option only where this conftest is loaded at start-up, i.e. when
tests/faults is named on the command line). Every figure a test measures (recovery time,
catch-up rate, fuzz cases) is printed in pytest's terminal summary and so in `make test`'s output.
"""

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node import tls
from tests.faults import figures
from tests.faults.harness import Cluster, Network

SLOW_ENV = "CITYLEDGER_SLOW"


def pytest_addoption(parser: pytest.Parser) -> None:
    with contextlib.suppress(ValueError):  # another conftest may declare it too
        parser.addoption(
            "--run-slow", action="store_true", default=False,
            help="also run the long soak variants of the fault tests (or CITYLEDGER_SLOW=1)",
        )  # fmt: skip


def slow_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow", default=False)) or os.environ.get(SLOW_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if slow_enabled(config):
        return
    skip = pytest.mark.skip(reason=f"long soak: run with --run-slow or {SLOW_ENV}=1")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not figures.FIGURES:
        return
    terminalreporter.section("fault tests: figures measured")
    for name, text in figures.FIGURES:
        terminalreporter.write_line(f"{name}: {text}")


@pytest.fixture
def client_tls() -> ssl.SSLContext:
    """The `http` session's TLS context; each `Cluster` adds its network's validators to it."""
    return tls.client_context("")


@pytest.fixture
async def http(client_tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64, ssl=client_tls)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
async def clusters(
    http: aiohttp.ClientSession, client_tls: ssl.SSLContext, tmp_path: Path
) -> AsyncIterator[ClusterFactory]:
    """Make clusters of node processes; every one is stopped when the test ends, pass or fail."""
    made: list[Cluster] = []

    def make(net: Network, **kw: Any) -> Cluster:
        cluster = Cluster(net, http, tmp_path / f"logs{len(made)}", tls=client_tls, **kw)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            await cluster.close()
