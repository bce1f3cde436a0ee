"""Event requests over HTTP, answered in one place for both ways of serving them.

The fast path (``fastpath.py``) and the FastAPI routes (``routes/events.py``) hand the raw
ASGI request here and send back the ``Reply``, so they answer every request alike, byte
for byte, headers included. What is checked, in order, for GET and POST alike: the
request id, the account id, the login (``TRACKER_HTTP_AUTH``), the event(s) (the query or
path of a GET, the body of a POST), that the account is active, the rate limit; then the
events are published. A refused request therefore charges no rate-limit tokens, and
every refusal is counted in ``tracker_requests_total``. With logins and rate limits off a
GET pays for neither.

With logins on, events come only as a POST with a JSON or NDJSON body (405 for a GET,
415 for another content type), checked before the login: a browser that saved a login
sends it with whatever any web page asks of the tracker, and only such a POST needs a
CORS preflight, which only ``TRACKER_CORS_ORIGINS`` pass (docs/adr/0017). A large body
is parsed in a worker thread: the event loop gets the interpreter back between its steps
(orjson's own pass still holds it), which halved the loop's longest stall.
"""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import orjson
from starlette.types import Receive, Scope

from tracker_api.config import Settings
from tracker_api.errors import (
    InvalidRequest,
    LoginNeedsJson,
    LoginNeedsPost,
    PublishOutcomeUnknown,
    TrackerError,
)
from tracker_api.http.auth import HttpAuth
from tracker_api.http.batch import (
    JSON,
    NDJSON,
    Body,
    max_body_bytes,
    media_type,
    parse_body,
    read_body,
)
from tracker_api.http.request import RequestHeaders, account_of, read_event_request
from tracker_api.http.tracing import RequestIds, check_request_id, log_failure, trace_id
from tracker_api.http.trim import Trimmer
from tracker_api.service.events import EventService
from tracker_api.service.validation import check_account_id, check_event_id

Headers = list[tuple[bytes, bytes]]
CONTENT_TYPE_JSON = (b"content-type", b"application/json")
REQUEST_ID_HEADER = b"x-request-id"
# Larger bodies are parsed in a thread: the largest legal batch (23 MiB of JSON) took the
# loop ~50 ms to count, parse and validate, every other request waiting meanwhile.
PARSE_INLINE_BYTES = 64 * 1024
LOGIN_MEDIA_TYPES = frozenset({JSON, NDJSON})


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: Headers  # without content-length, which each server adds its own way


def partial_detail(failed: int, total: int) -> str:
    return (
        f"{failed} of {total} events not accepted (see results); retry only those, with the "
        "same eventId"
    )


class HttpEvents:
    """``auth``: the logins of ``TRACKER_PASSWORD_FILE`` (the app's one ``HttpAuth``),
    checked on event requests when ``TRACKER_HTTP_AUTH`` is on."""

    def __init__(
        self, service: EventService, settings: Settings, auth: HttpAuth | None = None
    ) -> None:
        self.service = service
        self.max_batch = settings.max_batch
        self.max_body = max_body_bytes(settings.max_batch, settings.max_data_bytes)
        self.auth = auth if settings.http_auth else None
        self.limiter = service.limiter  # shared with device events (ingest)
        self.request_ids = RequestIds()
        self.trimmer = Trimmer()

    # -- the two requests ----------------------------------------------------------------

    async def get(self, scope: Scope) -> Reply:
        service = self.service
        headers = RequestHeaders(scope["headers"])
        request_id = headers.request_id
        account_id = ""
        try:
            extra = self._context(headers)
            if self.auth is not None:  # any web page can make a browser send a GET
                raise LoginNeedsPost()
            account_id, data, event_id = read_event_request(scope, headers)
            check_account_id(account_id)
            service.validate_item(data, event_id)
            await service.accounts.require_active(account_id)
            if self.limiter is not None:
                self.limiter.take(account_id, 1)
        except TrackerError as error:
            service.count("http", error.outcome)
            return self._refusal(error, request_id, account_id)
        try:
            body = await service.publish(account_id, data, event_id, extra=extra)
        except TrackerError as error:  # counted by the service
            return self._refusal(error, request_id, account_id)
        return Reply(200, body, _headers(self._echo(request_id)))

    async def post(self, scope: Scope, receive: Receive) -> Reply:
        headers = RequestHeaders(scope["headers"])
        request_id = headers.request_id
        account_id = ""
        size = 0  # of the body read: a big one's memory is given back afterwards (trim.py)
        try:
            extra = self._context(headers)
            account_id = account_of(scope)
            check_account_id(account_id)
            if self.auth is not None:  # before the body: strangers do not get to upload
                if media_type(headers.content_type) not in LOGIN_MEDIA_TYPES:
                    raise LoginNeedsJson()  # a form or text/plain: sent without a preflight
                self.auth.check(account_id, headers.authorization, client_address(scope))
            raw = await read_body(receive, _content_length(headers), self.max_body)
            size = len(raw)
            body = await self._parse(raw, headers.content_type)
            key = headers.idempotency_key
            if body.single and body.items[0].event_id is None and key is not None:
                check_event_id(key)  # it becomes the eventId (_one)
            await self.service.accounts.require_active(account_id)
            if self.limiter is not None:
                self.limiter.take(account_id, len(body.items))
        except TrackerError as error:
            self.service.count("http", error.outcome)
            self.trimmer.after(size)
            return self._refusal(error, request_id, account_id)
        try:
            if body.single:
                return await self._one(account_id, body, headers, extra, request_id)
            return await self._batch(account_id, body, extra, request_id)
        finally:
            self.trimmer.after(size)

    # -- pieces --------------------------------------------------------------------------

    async def _parse(self, raw: bytes, content_type: str | None) -> Body:
        arguments = (raw, content_type, self.max_batch, self.service.validate_item)
        if len(raw) <= PARSE_INLINE_BYTES:
            return parse_body(*arguments)
        return await asyncio.to_thread(parse_body, *arguments)

    def _context(self, headers: RequestHeaders) -> dict[str, str] | None:
        """``traceId`` and ``requestId`` for the events of this request, when given."""
        context = None
        if headers.traceparent is not None:
            trace = trace_id(headers.traceparent)
            if trace is not None:
                context = {"traceId": trace}
        if headers.request_id is not None:
            context = context or {}
            context["requestId"] = check_request_id(headers.request_id)
        return context

    def _echo(self, request_id: str | None) -> bytes:
        return (request_id or self.request_ids.new()).encode("latin-1")

    def _refusal(self, error: TrackerError, request_id: str | None, account_id: str) -> Reply:
        if request_id is not None and isinstance(error, InvalidRequest):
            try:
                check_request_id(request_id)
            except InvalidRequest:
                request_id = None  # never echo what was refused
        echoed = self._echo(request_id)
        log_failure(echoed.decode("latin-1"), account_id, error)
        return Reply(error.status, error.body, _headers(echoed, error))

    async def _one(
        self,
        account_id: str,
        body: Body,
        headers: RequestHeaders,
        extra: dict[str, str] | None,
        request_id: str | None,
    ) -> Reply:
        item = body.items[0]
        try:
            answer = await self.service.publish(
                account_id,
                item.data,
                item.event_id or headers.idempotency_key,
                extra=_with_device_time(item.device_time, extra),
            )
        except TrackerError as error:  # counted by the service
            return self._refusal(error, request_id, account_id)
        return Reply(200, answer, _headers(self._echo(request_id)))

    async def _batch(
        self, account_id: str, body: Body, extra: dict[str, str] | None, request_id: str | None
    ) -> Reply:
        service = self.service
        event_ids = [item.event_id or service.ids.new() for item in body.items]
        accepted_at = service.clock.now()  # one moment for the whole batch
        payloads = [
            service.envelope(
                account_id,
                item.data,
                event_id,
                _with_device_time(item.device_time, extra),
                accepted_at,
            )
            for item, event_id in zip(body.items, event_ids, strict=True)
        ]
        outcomes = await service.track_batch(account_id, payloads)
        failed = [outcome for outcome in outcomes if outcome is not None]
        echoed = self._echo(request_id)
        if not failed:
            answer = b'{"events":[' + b",".join(payloads) + b"]}"
            return Reply(200, answer, _headers(echoed))
        # The worst outcome decides the status: 504 when some may still be delivered.
        unknown = any(isinstance(outcome, PublishOutcomeUnknown) for outcome in failed)
        overall = PublishOutcomeUnknown() if unknown else failed[0]
        detail = partial_detail(len(failed), len(outcomes))
        log_failure(echoed.decode("latin-1"), account_id, type(overall)(detail))
        results = [
            {"status": 200, "event": orjson.Fragment(payload)}
            if outcome is None
            else {"status": outcome.status, "eventId": event_id, "detail": outcome.detail}
            for payload, event_id, outcome in zip(payloads, event_ids, outcomes, strict=True)
        ]
        answer = orjson.dumps(
            {"detail": detail, "accepted": len(outcomes) - len(failed), "results": results}
        )
        return Reply(overall.status, answer, _headers(echoed, overall))


def client_address(scope: Scope | dict[str, Any]) -> str:
    """The client's address (the TCP peer, or what a trusted proxy forwarded)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _content_length(headers: RequestHeaders) -> int | None:
    if headers.content_length is None:
        return None
    try:
        return int(headers.content_length)
    except ValueError:
        raise InvalidRequest("Invalid Content-Length") from None


def _with_device_time(
    device_time: str | None, context: dict[str, str] | None
) -> dict[str, str] | None:
    if device_time is None:
        return context
    return {"deviceTime": device_time, **(context or {})}


def _headers(request_id: bytes, error: TrackerError | None = None) -> Headers:
    headers = [CONTENT_TYPE_JSON, (REQUEST_ID_HEADER, request_id)]
    if error is not None:
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    return headers
