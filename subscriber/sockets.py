"""Socket details paho leaves to its caller: TLS-buffered bytes, corking, error texts."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


def buffered(sock: Any) -> int:
    """Bytes TLS has decrypted but paho not yet read: select() cannot see them."""
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0


@contextmanager
def corked(sock: Any) -> Iterator[None]:
    cork = getattr(socket, "TCP_CORK", None)  # Linux only; elsewhere each send goes alone
    try:
        if cork is not None:
            sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
        yield
    finally:
        if cork is not None:
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, cork, 0)


def error_text(error: BaseException) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror}"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
