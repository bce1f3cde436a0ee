"""Local TCP ports: is one served, could a server take it, and which ones are free.

A port can be unserved and still not free: an outgoing connection whose kernel-chosen
local port it is holds it, and a server's ``bind`` then fails with "address already in
use" while a connect test sees nothing. ``port_free`` tries the bind itself, and
``free_ports`` chooses below the kernel's ephemeral range, where no outgoing connection
takes a port between the choice and the server's start.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000  # under this: well-known and registered services' ports
TRIES = 1_000


def port_open(port: int, host: str = HOST) -> bool:
    """Whether something accepts connections on ``port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``port`` now (with SO_REUSEADDR, as servers do:
    a closed connection's TIME_WAIT does not count, a live one does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_start() -> int:
    """The first port the kernel may give an outgoing connection (32768 where unknown)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, block: int = 1) -> list[int]:
    """``count`` different ports, each the first of ``block`` consecutive ports a server
    could take now, none in the ephemeral range (chosen at random from below it, so that
    runs side by side rarely try the same). Falls back to kernel-chosen ports where the
    range starts too low to leave room."""
    top = ephemeral_start() - block
    if top - LOWEST < 100 * count * block:
        return kernel_chosen(count)
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(TRIES):
        first = random.randint(LOWEST, top)
        ports = set(range(first, first + block))
        if ports & taken or not all(map(port_free, ports)):
            continue
        chosen.append(first)
        taken |= ports
        if len(chosen) == count:
            return chosen
    raise OSError(f"no {count} free blocks of {block} ports below {top + block}")


def kernel_chosen(count: int) -> list[int]:
    """Ports the kernel picks as free, all different (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
