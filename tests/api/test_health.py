"""Liveness, readiness and metrics."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine

from tests.helpers.fakes import FakePublisher
from tracker_api import metrics
from tracker_api.errors import RETRY_AFTER_SECONDS
from tracker_api.http.runtime import runtime_of
from tracker_api.storage import event_store
from tracker_api.storage.event_store import Watermark


def test_healthz_is_ok(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ready_with_broker_and_database(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "broker": True,
        "broker_status": "connected",
        "database": True,
        "ingest": "off",  # the caller's publisher: nothing consumes device messages
        "archive": "off",  # nor track/#
        "archive_lag_s": None,  # never marked
    }


def test_readyz_is_503_without_the_broker(client: TestClient, publisher: FakePublisher) -> None:
    publisher.connected = False

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "status": "unavailable",
        "broker": False,
        "broker_status": "unreachable: fake broker down",
        "database": True,
        "ingest": "off",
        "archive": "off",
        "archive_lag_s": None,
    }


def test_readyz_is_503_and_events_503_without_the_database(
    client: TestClient, publisher: FakePublisher, database: tuple[str, Engine]
) -> None:
    url, engine = database
    engine.dispose()
    path = url.removeprefix("sqlite:///")
    with open(path, "wb") as broken:  # not a database any more
        broken.write(b"garbage" * 1000)

    ready = client.get("/readyz")
    event = client.get("/2", params={"data": "x"})

    assert ready.status_code == 503
    assert ready.json()["database"] is False
    assert event.status_code == 503
    assert event.json() == {"detail": "Account database unavailable; retry later"}
    assert event.headers["retry-after"] == "1"
    assert publisher.published == []


def test_metrics_count_requests_by_outcome(client: TestClient) -> None:
    client.get("/1", params={"data": "x"})
    client.get("/999", params={"data": "x"})

    text = client.get("/metrics").text

    assert 'tracker_requests_total{outcome="accepted",source="http"}' in text
    assert 'tracker_requests_total{outcome="unknown_account",source="http"}' in text
    assert "tracker_publish_seconds_bucket" in text
    assert "tracker_broker_connected" in text


def test_docs_and_openapi_describe_the_event_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    assert "/{account_id}" in spec["paths"]
    assert "/{account_id}/{data}" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_every_metric_is_named_in_the_code_as_on_the_metrics_page() -> None:
    declared = {
        name: metric
        for name, metric in vars(metrics).items()
        if isinstance(metric, Counter | Gauge | Histogram)
    }

    assert declared  # the check below must have something to check
    for name, metric in declared.items():
        assert [f"tracker_{name.lower()}"] == [family.name for family in metric.describe()]


def test_readyz_documents_the_retry_after_it_sends(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.connected = False
    spec = client.get("/openapi.json").json()

    not_ready = client.get("/readyz")

    description = spec["paths"]["/readyz"]["get"]["responses"]["503"]["description"]
    assert not_ready.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert f"Retry-After: {RETRY_AFTER_SECONDS}" in description


def test_readyz_reports_how_far_the_archives_watermark_trails(
    client: TestClient, database: tuple[str, Engine]
) -> None:
    """However the archive runs (here: as another process would, writing the watermark it
    reached 42 s ago), the tracker reports its lag from the database."""
    session = runtime_of(client.app.api).archive_reader.session  # type: ignore[attr-defined]
    event_store.insert(database[1], [], Watermark(session, int((time.time() - 42) * 1000)))

    lag = client.get("/readyz").json()["archive_lag_s"]

    assert 42 <= lag < 52
    event_store.insert(database[1], [], Watermark(session, int(time.time() * 1000)))
    assert client.get("/readyz").json()["archive_lag_s"] < 10
