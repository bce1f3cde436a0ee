"""The nodes of one broker cluster: how a list of them is written, and in which order and
at what pace a client tries them. Pure logic, shared by the tracker and mqtt-tail.

The pacing rule: a node that refuses, cannot be reached or drops the connection is left
for the next one at once, so a client is back on a live node within one connection
attempt while any node is up; only after a whole round of failures does it wait, and the
wait grows round after round (the caller's backoff), so a cluster that is down entirely
is not hammered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

Node = TypeVar("Node")


class Pacing(Protocol):
    def next(self) -> float: ...

    def reset(self) -> None: ...


def parse_hosts(text: str, default_port: int) -> list[tuple[str, int]]:
    """``host[:port][,host[:port]...]`` (IPv6 in brackets) as ``(host, port)`` pairs;
    ``ValueError`` with a readable reason when an entry has no host, a port is not one, or
    a node is listed twice. The reasons never quote the text: a mistyped URL may have put
    part of a password there."""
    entries = [entry.strip() for entry in text.split(",")]
    nodes: list[tuple[str, int]] = []
    for number, entry in enumerate(entries, 1):
        where = f" (host {number} of {len(entries)})" if len(entries) > 1 else ""
        try:
            url = urlsplit(f"//{entry}")
            port = url.port
        except ValueError:
            raise ValueError(f"has an invalid port{where}") from None
        if not url.hostname:
            raise ValueError(f"has no host{where}")
        if url.username is not None or url.path or url.query or url.fragment:
            raise ValueError(f"has an invalid host{where}: expected host[:port]")
        node = (url.hostname, port or default_port)
        if node in nodes:
            raise ValueError(f"lists a node twice{where}")
        nodes.append(node)
    return nodes


class Rotation(Generic[Node]):
    """Which node to try, and how long to wait before trying it (see the module doc)."""

    def __init__(self, nodes: Sequence[Node], pacing: Pacing, start: int = 0) -> None:
        if not nodes:
            raise ValueError("a rotation needs at least one node")
        self.nodes = tuple(nodes)
        self.pacing = pacing
        self._index = start % len(self.nodes)
        self._failed = 0  # nodes failed in a row since the last connection

    @property
    def current(self) -> Node:
        return self.nodes[self._index]

    def connected(self) -> None:
        """The current node took us: the next failure starts a new round."""
        self._failed = 0
        self.pacing.reset()

    def failed(self) -> float:
        """The current node failed or dropped us: move on; the seconds to wait first."""
        self._index = (self._index + 1) % len(self.nodes)
        self._failed += 1
        if self._failed < len(self.nodes):
            return 0.0
        self._failed = 0
        return self.pacing.next()
