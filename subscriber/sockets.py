"""Socket details paho leaves to its caller: TLS-buffered bytes, corking, waiting for the
broker to close, error texts."""

from __future__ import annotations

import os
import socket
import time
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


@contextmanager
def until_broker_closes(sock: Any, timeout: float) -> Iterator[None]:
    """Keeps the connection open after paho closes its socket, until the broker closes it.

    Sent is not received: the broker may not have read the last PUBACKs yet when we exit,
    and a new connection with our client id (the next ``--count`` run) takes the session
    over and discards them, so those events would be shown again. The broker reads in
    order and closes only after DISCONNECT, so its end-of-file means every PUBACK counted.
    """
    try:
        spare = socket.socket(fileno=os.dup(sock.fileno()))
    except (AttributeError, OSError, ValueError):
        yield
        return
    with spare:
        yield
        deadline = time.monotonic() + timeout
        with suppress(OSError):
            # Raw bytes (TLS records too): whatever still comes is not shown, not acked.
            while (left := deadline - time.monotonic()) > 0:
                spare.settimeout(left)
                if not spare.recv(65536):
                    break


def error_text(error: BaseException) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror}"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
