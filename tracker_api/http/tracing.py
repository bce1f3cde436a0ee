"""Request ids and W3C trace context for event requests.

- ``X-Request-ID``: kept when the client sends one (1-128 visible ASCII characters, else
  422) and then carried in every event of the request as ``requestId``; when absent the
  tracker names the request itself. Either way the id is echoed in the response's
  ``X-Request-ID`` and named in the log line of a failed request. A generated id is not
  put into the event: it would only repeat the eventId's job, and cost bytes per message.
- ``traceparent`` (https://www.w3.org/TR/trace-context/): its trace id becomes the event's
  ``traceId``. An invalid one is ignored, as the W3C recommendation asks (the caller
  starts a new trace), so a broken tracing library never loses an event.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from tracker_api.errors import InvalidRequest, TrackerError

logger = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
INVALID_TRACE_ID = "0" * 32
INVALID_PARENT_ID = "0" * 16


def check_request_id(request_id: str) -> str:
    if REQUEST_ID.fullmatch(request_id) is None:
        raise InvalidRequest("Invalid X-Request-ID: 1-128 visible ASCII characters")
    return request_id


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` header, else None."""
    if traceparent is None:
        return None
    match = TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace, parent, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace == INVALID_TRACE_ID:
        return None
    return None if parent == INVALID_PARENT_ID else trace


class RequestIds:
    """Ids for requests that came without one: a random per-process prefix and a counter,
    unique across workers and restarts, and far cheaper than a UUID per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


def log_failure(request_id: str, account_id: str, error: TrackerError) -> None:
    """One line per refused event request. Failures of the service (5xx) are warnings;
    refusals of bad requests are debug, so a flood of them cannot flood the log."""
    level = logging.WARNING if error.status >= 500 else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "request %s for account %r: %d %s",
            request_id,
            account_id,
            error.status,
            error.detail,
        )
