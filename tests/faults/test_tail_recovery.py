"""mqtt-tail survives its own restart, broker restarts, cut and silent connections:
every acknowledged event is shown exactly once, counted by eventId."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from devkit.broker import Mosquitto
from devkit.tail import Publisher, Tail, event
from tests.helpers.proxy import Proxy
from tests.helpers.tail import assert_exactly_once


def events(n: int, prefix: str, accounts: tuple[str, ...] = ("1", "2", "3")) -> list[dict]:
    return [event(accounts[i % len(accounts)], i, prefix) for i in range(n)]


def test_tail_restarted_with_the_same_id_shows_what_was_published_meanwhile_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    args = ("--json", "--client-id", "restart-me")
    with Publisher(broker.port) as publisher:
        with Tail(tmp_path, *args, port=broker.port) as first:
            first.wait_subscribed()
            before = publisher.publish(events(200, "before"))
            first.wait_for_events(200)
            assert first.terminate() == 0
        offline = publisher.publish(events(300, "offline"))
        with Tail(tmp_path, *args, port=broker.port) as second:
            second.wait_for_events(300)
            second.wait_for_stderr("session resumed")
            after = publisher.publish(events(100, "after"))
            second.wait_for_events(400)
            assert second.terminate() == 0
    assert_exactly_once(first.event_ids(), before)
    assert_exactly_once(second.event_ids(), offline | after)


def test_tail_started_while_the_broker_is_down_connects_when_it_appears(
    broker: Mosquitto, tmp_path: Path
) -> None:
    broker.stop()
    with Tail(tmp_path, "--json", "--client-id", "early", port=broker.port) as tail:
        tail.wait_for_stderr("unreachable")
        assert tail.alive
        broker.start()
        tail.wait_subscribed()
        with Publisher(broker.port) as publisher:
            sent = publisher.publish(events(100, "late"))
        tail.wait_for_events(100)
        assert tail.terminate() == 0
    assert_exactly_once(tail.event_ids(), sent)
    assert "Traceback" not in tail.stderr()


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing_and_shows_nothing_twice(
    broker: Mosquitto, tmp_path: Path
) -> None:
    sent = events(8000, "stream")
    with Tail(tmp_path, "--json", "--client-id", "survivor", port=broker.port) as tail:
        tail.wait_subscribed()
        with Publisher(broker.port) as publisher:
            # The publisher keeps going through the restart (paho resends what the broker
            # had not acknowledged), so the tail is mid-stream when the broker stops.
            publishing = threading.Thread(target=publisher.publish, args=(sent,))
            publishing.start()
            tail.wait_for_events(1000)
            broker.stop()  # SIGTERM: Mosquitto saves sessions and queues
            shown_at_stop = len(tail.event_ids())
            broker.start()
            publishing.join(40)
            assert not publishing.is_alive()
        tail.wait_for_stderr("connection lost")
        tail.wait_for_stderr("session resumed")
        tail.wait_for_events(8000, timeout=30)
        assert tail.alive
        assert tail.terminate() == 0
    assert shown_at_stop < 8000
    assert_exactly_once(tail.event_ids(), {item["eventId"] for item in sent})


def test_cut_connection_is_reestablished_without_loss(broker: Mosquitto, tmp_path: Path) -> None:
    with Proxy(broker.port) as proxy:
        with Tail(tmp_path, "--json", "--client-id", "cut", port=proxy.port) as tail:
            tail.wait_subscribed()
            with Publisher(broker.port) as publisher:
                sent = publisher.publish(events(300, "a"))
                tail.wait_for_events(300)
                proxy.cut()
                tail.wait_for_stderr("connection lost")
                sent |= publisher.publish(events(300, "b"))
                tail.wait_for_events(600)
            assert tail.terminate() == 0
    assert_exactly_once(tail.event_ids(), sent)


@pytest.mark.slow
def test_half_open_connection_is_noticed_and_nothing_is_lost(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with Proxy(broker.port) as proxy:
        with Tail(tmp_path, "--json", "--client-id", "silent", port=proxy.port) as tail:
            tail.wait_subscribed()
            with Publisher(broker.port) as publisher:
                sent = publisher.publish(events(200, "a"))
                tail.wait_for_events(200)
                proxy.blackhole()
                sent |= publisher.publish(events(300, "b"))  # queued or lost in the void
                # keepalive 1 s: a ping without answer drops the connection within ~2 s
                tail.wait_for_stderr("connection lost", timeout=8)
                proxy.restore()
                tail.wait_for_events(500, timeout=15)
                sent |= publisher.publish(events(100, "c"))
                tail.wait_for_events(600)
            assert tail.alive
            assert tail.terminate() == 0
    assert_exactly_once(tail.event_ids(), sent)


@pytest.mark.slow
def test_ten_thousand_events_queued_while_offline_arrive_complete(
    broker: Mosquitto, tmp_path: Path
) -> None:
    args = ("--json", "--client-id", "backlog")
    with Tail(tmp_path, *args, port=broker.port) as first:
        first.wait_subscribed()
        assert first.terminate() == 0
    with Publisher(broker.port) as publisher:
        sent = publisher.publish(events(10_000, "queued", tuple(str(n) for n in range(10))))
    with Tail(tmp_path, *args, port=broker.port) as second:
        second.wait_for_events(10_000, timeout=30)
        assert second.terminate() == 0
    assert_exactly_once(second.event_ids(), sent)
