"""The service's exceptions, each knowing its HTTP answer.

TrackerError
  ├── InvalidRequest      -> 422  (malformed account id, missing data, bad event id)
  ├── PayloadTooLarge     -> 413
  ├── AccountNotFound     -> 404  "Account Id does not exist!"
  ├── AccountInactive     -> 403  "Inactive account!"
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
