"""One TCP (or TLS) connection to the broker, as an ``asyncio.Protocol`` (the part
uvicorn's ``httptools_impl`` plays for HTTP): bytes in go to a ``Decoder``, packets out
are coalesced so that everything written during one pass of the event loop leaves in one
``send()`` (one send per message was the main cost of publishing, ADR 2)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import cast

from tracker_api.mqtt.codec import Decoder
from tracker_api.mqtt.errors import ProtocolError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.cafile)


async def open_link(address: BrokerAddress, decoder: Decoder, timeout: float) -> Link:
    """A connected ``Link`` feeding ``decoder``; ``TimeoutError`` or ``OSError`` if not."""
    context = address.ssl_context()  # per connection: a renewed CA file is read again
    _, link = await asyncio.wait_for(
        asyncio.get_running_loop().create_connection(
            lambda: Link(decoder),
            address.host,
            address.port,
            ssl=context,
            server_hostname=address.host if context else None,
        ),
        timeout,
    )
    return link


class Link(asyncio.Protocol):
    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_received = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Send what is pending, then close."""
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        try:
            self._decoder.feed(data)
        except ProtocolError as error:
            # Nothing after a broken packet can be framed reliably: start afresh.
            logger.error("%s; closing the connection", error)
            self.abort()
