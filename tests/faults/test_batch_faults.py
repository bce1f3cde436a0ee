"""A batch whose broker connection dies half-way: the per-item outcomes must be true to
what reached the broker, as a real subscriber sees it."""

from __future__ import annotations

from pathlib import Path

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.api import api_client
from tests.helpers.mqtt_peer import Peer
from tests.helpers.proxy import Proxy

BATCH = 1000
WINDOW = 600  # publishes in flight: the rest of the batch is refused at once
ACKED = 200


def test_a_broker_lost_mid_batch_gets_outcomes_true_to_what_it_received(
    broker: Mosquitto, tmp_path: Path
) -> None:
    items = [{"data": "x" * 200, "eventId": f"b-{n:04d}"} for n in range(BATCH)]
    with (
        Proxy(broker.port) as proxy,
        api_client(
            tmp_path,
            f"mqtt://127.0.0.1:{proxy.port}",
            publish_timeout=2.0,
            max_inflight=WINDOW,
            ingest=False,
            archive=False,  # one connection through the proxy: cut_after counts its bytes
        ) as api,
        Peer(broker.port, "track/#") as peer,
    ):
        proxy.cut_after(ACKED * 4)  # PUBACKs are 4 bytes: the broker dies after ACKED of them
        response = api.post("/1", json=items)

        # The tracker reconnects by itself; once a later event arrived, everything the
        # broker got from the dead connection was delivered before it.
        wait_until(lambda: api.get("/1?data=marker").status_code == 200, timeout=10)
        wait_until(lambda: "marker" in [e["data"] for e in peer.events()], timeout=5)
        delivered = {e["eventId"] for e in peer.events() if e["eventId"].startswith("b-")}

    assert response.status_code == 504, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    results = body["results"]
    assert len(results) == BATCH
    by_status: dict[int, set[str]] = {200: set(), 503: set(), 504: set()}
    for item, result in zip(items, results, strict=True):
        event_id = result["event"]["eventId"] if result["status"] == 200 else result["eventId"]
        assert event_id == item["eventId"]  # request order
        by_status[result["status"]].add(event_id)
    accepted, refused, unknown = by_status[200], by_status[503], by_status[504]
    assert body["accepted"] == len(accepted)
    assert len(refused) == BATCH - WINDOW  # never sent: the window was full
    assert len(accepted) == ACKED
    assert len(unknown) == WINDOW - ACKED
    assert accepted <= delivered  # a 200 means the broker has it
    assert not refused & delivered  # a 503 means it was never sent
    assert delivered <= accepted | unknown
