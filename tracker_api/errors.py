"""The service's exceptions, each knowing its HTTP answer.

TrackerError
  ├── InvalidRequest      -> 422  (malformed account id, missing data, bad event id)
  │     └── InvalidBatch          (a POST with bad items: the index of each, nothing sent)
  ├── PayloadTooLarge     -> 413
  ├── AccountNotFound     -> 404  "Account Id does not exist!"
  ├── AccountInactive     -> 403  "Inactive account!"
  ├── LoginRequired       -> 401 + WWW-Authenticate (TRACKER_HTTP_AUTH: no or wrong login)
  ├── LoginForbidden      -> 403  (another account's login)
  ├── RateLimited         -> 429 + Retry-After (over TRACKER_RATE_LIMIT)
  └── ServiceUnavailable  -> 503 + Retry-After: not done now, safe to retry
        ├── PublishFailed        (broker unreachable, window full: nothing was sent)
        ├── DatabaseUnavailable  (accounts database unreachable)
        └── PublishOutcomeUnknown -> 504 (sent, but no PUBACK in time: it may still arrive)

The body keeps FastAPI's shape, ``{"detail": ...}``, on the fast path too.
"""

from __future__ import annotations

import orjson

RETRY_AFTER_SECONDS = "1"


class TrackerError(Exception):
    status = 500
    detail = "Internal error"
    outcome = "error"  # label of tracker_requests_total

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


class AccountNotFound(TrackerError):
    status = 404
    detail = "Account Id does not exist!"
    outcome = "unknown_account"


class AccountInactive(TrackerError):
    status = 403
    detail = "Inactive account!"
    outcome = "inactive_account"


class LoginRequired(TrackerError):
    status = 401
    detail = "Login required: HTTP Basic with the account's MQTT login (or tracker's)"
    outcome = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="tracker", charset="UTF-8"'}


class LoginForbidden(TrackerError):
    status = 403
    detail = "This login may not send events for this account"
    outcome = "forbidden"


class RateLimited(TrackerError):
    status = 429
    outcome = "rate_limited"

    def __init__(self, limit: float, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"Rate limit of {limit:g} events/s for this account exceeded; "
            f"retry after {retry_after} s"
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(TrackerError):
    status = 503
    outcome = "unavailable"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER_SECONDS}


class PublishFailed(ServiceUnavailable):
    detail = "Message broker unavailable, the event was not accepted; retry later"
    outcome = "broker_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    detail = "Account database unavailable; retry later"
    outcome = "database_unavailable"


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
