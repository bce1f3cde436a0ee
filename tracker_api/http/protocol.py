"""The HTTP/1.1 protocol ``tracker-api`` serves with: uvicorn's httptools protocol with the
request head bounded as it arrives.

httptools (llhttp) sets no limit on the request line or the headers: uvicorn gathers the
target, httptools each header's value, and the application sees them only once the whole
head is in. A check in the application comes too late to bound memory: a single 64 MiB
header was held (more than twice over, while it was concatenated) before any code of ours
ran. So this protocol counts while the head arrives:

- the request target may be at most ``longest_target(TRACKER_MAX_DATA_BYTES)`` bytes, what
  a GET whose data is percent-encoded throughout needs (414 beyond);
- the header fields, names and values, at most ``TRACKER_MAX_HEADER_BYTES`` (431 beyond);
- a head still incomplete after the reads it came in, at most both and
  ``REQUEST_LINE_SLACK`` (431): one read (256 KiB with uvloop) may come on top.

Beyond a limit it answers at once, with the JSON ``detail`` every refusal has and
``Connection: close``, closes its sending side, and drops whatever the client still sends
for up to ``LINGER_SECONDS``, so that the client reads the answer rather than a reset.
The application never sees such a request: both ways of serving events answer alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tracker_api.config import get_settings

logger = logging.getLogger(__name__)

# Room in a request target besides the data: "/", the account id, "?data=", an eventId
# and whatever other parameters a client adds (they are read and ignored).
TARGET_SLACK = 2048
# The method, spaces, "HTTP/1.1" and line ends around the target and the fields.
REQUEST_LINE_SLACK = 1024
FIELD_FRAMING = 4  # ": " and CRLF around each header field
LINGER_SECONDS = 2.0


def longest_target(max_data_bytes: int) -> int:
    """The longest request target a legal event request needs: its data percent-encoded
    byte by byte (three characters each), and the rest of the target."""
    return 3 * max_data_bytes + TARGET_SLACK


@dataclass(frozen=True)
class HeadLimits:
    target: int
    fields: int

    @property
    def head(self) -> int:
        return self.target + self.fields + REQUEST_LINE_SLACK


@functools.cache
def configured_limits() -> HeadLimits:
    settings = get_settings()
    return HeadLimits(longest_target(settings.max_data_bytes), settings.max_header_bytes)


class HeadTooLarge(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def target_too_long(limits: HeadLimits) -> HeadTooLarge:
    return HeadTooLarge(414, f"The request target is longer than {limits.target} bytes")


def fields_too_large(limits: HeadLimits) -> HeadTooLarge:
    return HeadTooLarge(
        431, f"The request header fields are larger than {limits.fields} bytes in total"
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = configured_limits()
        self._head_open = True  # the current request's head is still arriving
        self._head_bytes = 0  # bytes of the reads that came while it was (all head)
        self._field_bytes = 0
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # -- reading -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is out: what the client still sends is dropped
        if self._head_open:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, HeadTooLarge):
                self._refuse(error.__context__)
            else:
                self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_open and self._head_bytes > self.limits.head:
            self._refuse(fields_too_large(self.limits))

    def _invalid(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Whatever of this read preceded the message belongs to the previous one: the
        # count starts with the next read (so it never counts another request's bytes).
        self._head_open = True
        self._head_bytes = 0
        self._field_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.target:
            raise target_too_long(self.limits)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_bytes += len(name) + len(value) + FIELD_FRAMING
        if self._field_bytes > self.limits.fields:
            raise fields_too_large(self.limits)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    # -- refusing ------------------------------------------------------------------------

    def _refuse(self, error: HeadTooLarge) -> None:
        self._refused = True
        logger.debug("refused a request head from %s: %d %s", self.client, error.status, error)
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request's answer is still due: nothing may be written before it.
            self.transport.close()
            return
        body = orjson.dumps({"detail": error.detail})
        content = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then the end
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)
