"""Ports for the tools: chosen below the ephemeral range (``tracker_api.ops.ports``)."""

from __future__ import annotations

from tracker_api.ops.ports import free_ports, port_open

__all__ = ["free_port", "port_open"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that a server could take now and no outgoing connection
    will take in the meantime."""
    return free_ports(1)[0]
