"""Prometheus metrics. With several workers they are aggregated across processes
(prometheus_client's multiprocess mode, enabled by ``PROMETHEUS_MULTIPROC_DIR``)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUEST_OUTCOMES = (
    "accepted",
    "invalid",
    "too_large",
    "unknown_account",
    "inactive_account",
    "broker_unavailable",
    "outcome_unknown",
    "database_unavailable",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "login_throttled",
    "method_not_allowed",
    "unsupported_media_type",
)

REQUESTS = Counter(
    "tracker_requests", "Event requests (HTTP and MQTT ingest) by outcome", ["source", "outcome"]
)
PUBLISH_SECONDS = Histogram(
    "tracker_publish_seconds",
    "Time from publish to the broker's PUBACK",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BROKER_CONNECTED = Gauge(
    "tracker_broker_connected",
    "1 while connected to the broker (summed over live workers)",
    multiprocess_mode="livesum",
)
BROKER_DISCONNECTS = Counter("tracker_broker_disconnects", "Connections to the broker lost")

INGEST_DROPPED = Counter(
    "tracker_ingest_dropped",
    "Device messages dropped unprocessed: retained copies replayed by the broker, and QoS-0 "
    "messages that could not be processed at once",
    ["reason"],
)

ARCHIVED = Counter("tracker_archived", "Events written to the archive (once each)")
ARCHIVE_MALFORMED = Counter(
    "tracker_archive_malformed",
    "Messages on track/# the archive skipped: not an event envelope, or another account's",
)
ARCHIVE_LAG_SECONDS = Histogram(
    "tracker_archive_lag_seconds",
    "From an event's timestamp to the commit that archived it (an even sample of each batch)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def render() -> tuple[bytes, str]:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
