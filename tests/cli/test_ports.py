"""The one free-port helper: ports below the kernel's ephemeral range, free when handed out."""

import socket
from pathlib import Path

import pytest

from cli import ports


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    picked = ports.free_ports(8)
    assert len(set(picked)) == 8
    assert all(ports.PORT_LOW <= p < ports.port_high() <= ports.PORT_HIGH_MAX for p in picked)
    for port in picked:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: the helper released it


def test_a_base_port_starts_a_free_run() -> None:
    base = ports.free_base_port(5)
    assert ports.PORT_LOW <= base < base + 4 < ports.port_high()
    assert ports.free_ports(1, consecutive=True)[0] >= ports.PORT_LOW


def test_the_kernels_range_lowers_the_ceiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "range")
    assert ports.port_high() == ports.PORT_HIGH_MAX  # unreadable: the default
    (tmp_path / "range").write_text("28000\t60999\n")
    assert ports.port_high() == 28_000
    assert all(p < 28_000 for p in ports.free_ports(20))
    (tmp_path / "range").write_text("1024 65535\n")  # a range that leaves no room below
    assert ports.port_high() == ports.PORT_HIGH_MAX


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.PORT_LOW))
        monkeypatch.setattr(ports, "port_high", lambda: ports.PORT_LOW + 2)
        assert ports.free_ports(1) == [ports.PORT_LOW + 1]
        with pytest.raises(OSError, match="no 2 free ports"):
            ports.free_ports(2)
