"""The service's exceptions, each knowing its HTTP answer.

TrackerError
  ├── InvalidRequest      -> 422  (malformed account id, missing data, bad event id)
  │     └── InvalidBatch          (a POST with bad items: the index of each, nothing sent)
  ├── PayloadTooLarge     -> 413
  ├── AccountNotFound     -> 404  "Account Id does not exist!"
  ├── AccountInactive     -> 403  "Inactive account!"
  ├── AccountHasEvents    -> 409  (removing an account with archived events, unforced)
  ├── LoginRequired       -> 401 + WWW-Authenticate (TRACKER_HTTP_AUTH: no login)
  │     ├── LoginRefused          (an unknown user or a wrong password: one answer for both)
  │     └── MalformedLogin        (an Authorization header that is not HTTP Basic)
  ├── LoginForbidden      -> 403  (another account's login)
  ├── LoginThrottled      -> 429 + Retry-After (too many failed logins: login or address)
  ├── LoginNeedsPost      -> 405 + Allow: POST (TRACKER_HTTP_AUTH: an event GET)
  ├── LoginNeedsJson      -> 415  (TRACKER_HTTP_AUTH: a POST that is not JSON or NDJSON)
  ├── RateLimited         -> 429 + Retry-After (over TRACKER_RATE_LIMIT)
  │     └── BatchOverBurst        (a batch larger than the burst: never passes, no Retry-After)
  └── ServiceUnavailable  -> 503 + Retry-After: not done now, safe to retry
        ├── PublishFailed        (broker unreachable, window full: nothing was sent)
        ├── DatabaseUnavailable  (accounts database unreachable)
        └── PublishOutcomeUnknown -> 504 (sent, but no PUBACK in time: it may still arrive)

The body keeps FastAPI's shape, ``{"detail": ...}``, on the fast path too.
"""

from __future__ import annotations

from typing import Any

import orjson

RETRY_AFTER_SECONDS = 1
"""How long a client waits before retrying a 503 / 504; the one value every answer uses."""
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class TrackerError(Exception):
    status = 500
    detail = "Internal error"
    outcome = "error"  # label of tracker_requests_total
    when = "An unexpected error"  # what the answer means, for the OpenAPI description

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)

    @property
    def body(self) -> bytes:
        return orjson.dumps({"detail": self.detail})

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(TrackerError):
    status = 422
    outcome = "invalid"
    when = (
        "Malformed account id (a percent-encoded `/` is part of it), missing data, invalid "
        "event id, or a path or query string that is not valid UTF-8"
    )


class InvalidBatch(InvalidRequest):
    """Items of a POST that cannot be events; ``problems`` pairs each one's index (in
    request order, from 0) with what is wrong with it."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} invalid item(s); nothing was published")

    @property
    def body(self) -> bytes:
        return orjson.dumps({"detail": [{"index": i, "msg": msg} for i, msg in self.problems]})


class PayloadTooLarge(TrackerError):
    status = 413
    outcome = "too_large"
    when = "data larger than TRACKER_MAX_DATA_BYTES"


class AccountNotFound(TrackerError):
    status = 404
    detail = "Account Id does not exist!"
    outcome = "unknown_account"
    when = "Unknown account"


class AccountInactive(TrackerError):
    status = 403
    detail = "Inactive account!"
    outcome = "inactive_account"
    when = "Inactive account"


class AccountHasEvents(TrackerError):
    """Removing the account would delete its archived events too: done only when forced
    (docs/adr/0019-account-management.md)."""

    status = 409
    outcome = "conflict"
    when = "The account has archived events and the removal was not forced"

    def __init__(self, account_id: str = "", count: int = 0) -> None:
        self.account_id = account_id
        self.count = count
        super().__init__(
            None
            if not account_id
            else f"Account {account_id!r} has {count} archived event(s): deactivate it to keep "
            f"them, or remove it with force=true to delete them too"
        )


class LoginRequired(TrackerError):
    status = 401
    detail = "Login required: HTTP Basic with the account's MQTT login (or tracker's)"
    outcome = "unauthorized"
    when = "TRACKER_HTTP_AUTH: no login"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="tracker", charset="UTF-8"'}


class LoginRefused(LoginRequired):
    """An unknown user and a wrong password get the same answer, in the same time, so
    that nobody learns which logins exist."""

    detail = "Wrong user name or password"
    when = "An unknown user or a wrong password"


class MalformedLogin(LoginRequired):
    detail = "The Authorization header is not HTTP Basic: Basic base64(user:password)"
    when = "An Authorization header that is not HTTP Basic"


class LoginForbidden(TrackerError):
    status = 403
    detail = "This login may not send events for this account"
    outcome = "forbidden"
    when = "TRACKER_HTTP_AUTH: another account's login"


class LoginThrottled(TrackerError):
    """Too many failed logins for this login name, or from this client address, within
    the last minute (``TRACKER_LOGIN_FAILURES_PER_LOGIN`` / ``_PER_ADDRESS``): refused
    before the password is looked at, so a guesser learns nothing until ``retry_after``."""

    status = 429
    outcome = "login_throttled"
    when = "Too many failed logins for this login or from this address"

    def __init__(self, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(
            None if retry_after is None else f"Too many failed logins; retry after {retry_after} s"
        )

    @property
    def headers(self) -> dict[str, str]:
        seconds = "seconds until a login may be tried again"
        return {"Retry-After": seconds if self.retry_after is None else str(self.retry_after)}


# With logins on, a browser that saved a login sends it with any request a web page makes
# to the tracker; only requests that need a CORS preflight are safe from other sites.
LOGIN_CONTENT_TYPES = "Content-Type application/json or application/x-ndjson"


class LoginNeedsPost(TrackerError):
    status = 405
    detail = f"Logins are on: send events with POST and {LOGIN_CONTENT_TYPES}, not GET"
    outcome = "method_not_allowed"
    when = "TRACKER_HTTP_AUTH: events are sent with POST only"

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": "POST"}


class LoginNeedsJson(TrackerError):
    status = 415
    detail = f"Logins are on: a POST needs {LOGIN_CONTENT_TYPES}"
    outcome = "unsupported_media_type"
    when = f"TRACKER_HTTP_AUTH: a POST without {LOGIN_CONTENT_TYPES}"


class RateLimited(TrackerError):
    """``limit`` (events/s) and ``retry_after`` (whole seconds until the request would
    pass) come from the limiter; without them, the answer as the docs describe it."""

    status = 429
    outcome = "rate_limited"
    when = "Over TRACKER_RATE_LIMIT events/s for this account"

    def __init__(self, limit: float | None = None, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(
            None
            if limit is None or retry_after is None
            else f"Rate limit of {limit:g} events/s for this account exceeded; "
            f"retry after {retry_after} s"
        )

    @property
    def headers(self) -> dict[str, str]:
        seconds = "seconds until the request would pass"
        return {"Retry-After": seconds if self.retry_after is None else str(self.retry_after)}


class BatchOverBurst(RateLimited):
    """A batch of more events than the account's bucket can ever hold (one second of
    events): no wait would let it pass, so no ``Retry-After``; the client splits it."""

    when = "A batch of more events than the per-account burst of TRACKER_RATE_LIMIT"

    def __init__(self, events: int | None = None, burst: int | None = None) -> None:
        super().__init__()
        if events is not None and burst is not None:
            self.detail = (
                f"A batch of {events} events exceeds the per-account burst ({burst} events); "
                f"send at most {burst} per request"
            )
            self.args = (self.detail,)

    @property
    def headers(self) -> dict[str, str]:
        return {}


class ServiceUnavailable(TrackerError):
    status = 503
    outcome = "unavailable"

    @property
    def headers(self) -> dict[str, str]:
        return dict(RETRY_AFTER)


class PublishFailed(ServiceUnavailable):
    detail = "Message broker unavailable, the event was not accepted; retry later"
    outcome = "broker_unavailable"
    when = "Not accepted, never delivered later"


class DatabaseUnavailable(ServiceUnavailable):
    detail = "Account database unavailable; retry later"
    outcome = "database_unavailable"
    when = "The accounts database is unreachable"


class PublishOutcomeUnknown(ServiceUnavailable):
    """The message left for the broker but its PUBACK did not come back in time (or the
    connection dropped first): the broker may have it and deliver it. A retry with the same
    eventId is harmless, since subscribers drop repeated eventIds; one without may show
    the event twice. A subclass of ``ServiceUnavailable`` because everything that retries
    a 503 (MQTT ingest) must retry this too."""

    status = 504
    detail = (
        "No acknowledgement from the message broker in time: the event may or may not be "
        "delivered; retry with the same Idempotency-Key"
    )
    outcome = "outcome_unknown"
    when = "Outcome unknown, the event may still be delivered"


def describe_headers(headers: dict[str, str]) -> str:
    return "".join(f". {name}: {value}" for name, value in headers.items())


def openapi_responses(*errors: type[TrackerError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that may raise ``errors``, written from the
    classes themselves (status, detail, headers), so the docs say what the code answers."""
    texts: dict[int | str, list[str]] = {}
    for error in errors:
        text = error.when
        if error.detail != TrackerError.detail:  # a fixed detail, not one per request
            text += f": `{orjson.dumps({'detail': error.detail}).decode()}`"
        text += describe_headers(error().headers)
        texts.setdefault(error.status, []).append(text)
    return {status: {"description": "\n\n".join(parts)} for status, parts in texts.items()}
