"""A broker that goes quiet: for keepalive, in-flight and refusal behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SilentBroker:
    """Accepts, answers CONNACK (or a refusal) and then ``script``, then never says
    anything again."""

    def __init__(self, connack_code: int = 0, script: bytes = b"") -> None:
        self.connack_code = connack_code
        self.script = script
        self.connections = 0
        self.received = bytearray()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read(1024)
        writer.write(bytes([0x20, 2, 0, self.connack_code]) + self.script)
        while chunk := await reader.read(65536):
            self.received += chunk
        writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
