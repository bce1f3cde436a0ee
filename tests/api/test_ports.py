"""Choosing ports: a port an outgoing connection holds is not free, though nothing listens
on it; chosen ports lie below the ephemeral range, where no connection takes them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracker_api.ops import ports


@pytest.fixture
def connection() -> Iterator[socket.socket]:
    """A live loopback connection: its client end holds a kernel-chosen local port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            yield client


def test_a_port_held_by_a_connection_is_not_free_though_nothing_listens(
    connection: socket.socket,
) -> None:
    local = connection.getsockname()[1]
    assert not ports.port_open(local)
    assert not ports.port_free(local)
    with socket.socket() as server:  # what a server starting there would get
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            server.bind(("127.0.0.1", local))


def test_a_listening_port_is_open_and_not_free() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ports.port_open(port)
        assert not ports.port_free(port)
    assert ports.port_free(port)


def test_chosen_blocks_are_free_distinct_and_below_the_ephemeral_range() -> None:
    start = ports.ephemeral_start()
    firsts = ports.free_ports(7, block=11)
    blocks = [set(range(first, first + 11)) for first in firsts]
    every = set().union(*blocks)
    assert len(every) == 7 * 11  # no two blocks share a port
    assert all(ports.LOWEST <= port < start for port in every)
    assert all(map(ports.port_free, every))


def test_without_room_below_the_range_the_kernel_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernels = ports.ephemeral_start()
    narrow = tmp_path / "range"
    narrow.write_text(f"{ports.LOWEST + 50}\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", narrow)
    chosen = ports.free_ports(3)
    assert len(set(chosen)) == 3
    assert all(port >= kernels for port in chosen)  # bind(0) takes the kernel's range
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "absent")
    assert ports.ephemeral_start() == 32768


def test_no_free_block_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "port_free", lambda port, host="127.0.0.1": False)
    with pytest.raises(OSError, match="no 2 free blocks of 3 ports"):
        ports.free_ports(2, block=3)
