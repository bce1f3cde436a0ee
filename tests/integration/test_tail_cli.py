"""mqtt-tail in-process (click's CliRunner) against a real broker: options, output modes,
exit codes. The persistent session lets a first run subscribe and a second one read."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress

import orjson
import pytest
from click.testing import CliRunner, Result

from devkit.broker import Mosquitto
from devkit.tail import Publisher, Tail, event
from subscriber.cli import EXIT_REFUSED, EXIT_TIMEOUT, default_client_id, refusal_hint, tail
from subscriber.render import TEMPLATE_FIELDS
from subscriber.session import ConnectOptions, Refused
from tests.helpers.tail import assert_exactly_once

FAST = ["--keepalive", "1", "--reconnect-min", "0.05", "--reconnect-max", "0.2"]


def invoke(broker: Mosquitto, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(tail, ["--port", str(broker.port), *FAST, *args], env=env)


def subscribe(
    broker: Mosquitto, client_id: str, *args: str, env: dict[str, str] | None = None
) -> Tail:
    """A short first run, until it has subscribed: creates the persistent session."""
    with Tail(
        broker.workdir / "tails", "--client-id", client_id, *args, port=broker.port, env=env
    ) as first:
        first.wait_subscribed()
        assert first.terminate() == 0, first.stderr()
    return first


def records(result: Result) -> list[dict]:
    return [orjson.loads(line) for line in result.stdout_bytes.splitlines()]


def test_json_lines_carry_the_event_fields_and_the_receive_time(broker: Mosquitto) -> None:
    subscribe(broker, "json")
    with Publisher(broker.port) as publisher:
        sent = publisher.publish([event("42", n, "j") for n in range(50)])
    result = invoke(broker, "--client-id", "json", "--json", "--count", "50")
    assert result.exit_code == 0, result.stderr
    lines = records(result)
    assert_exactly_once([line["eventId"] for line in lines], sent)
    assert set(lines[0]) == {"eventId", "accountId", "timestamp", "data", "receivedAt"}
    assert "session resumed" in result.stderr


def test_count_leaves_the_rest_queued_for_the_next_run(broker: Mosquitto) -> None:
    subscribe(broker, "counted")
    with Publisher(broker.port) as publisher:
        sent = publisher.publish([event("1", n, "c") for n in range(30)])
    first = invoke(broker, "--client-id", "counted", "--json", "--count", "10")
    second = invoke(broker, "--client-id", "counted", "--json", "--count", "20")
    shown = [line["eventId"] for line in records(first) + records(second)]
    assert len(records(first)) == 10
    assert_exactly_once(shown, sent)


def test_account_filters_are_applied_by_the_broker(broker: Mosquitto) -> None:
    subscribe(broker, "filtered", "--account", "1", "--account", "3")
    with Publisher(broker.port) as publisher:
        publisher.publish([event(str(n % 4), n, "f") for n in range(40)])
    result = invoke(broker, "--client-id", "filtered", "--json", "--count", "20")
    assert result.exit_code == 0
    assert sorted({line["accountId"] for line in records(result)}) == ["1", "3"]
    assert len(records(result)) == 20


def test_plain_lines_and_templates_when_piped(broker: Mosquitto) -> None:
    subscribe(broker, "plain")
    subscribe(broker, "template")
    with Publisher(broker.port) as publisher:
        publisher.publish([event("7", n, "p", data=f"hello\x1b[31m{n}") for n in range(3)])
    plain = invoke(broker, "--client-id", "plain", "--count", "3")
    lines = plain.stdout.splitlines()
    assert len(lines) == 3
    assert "7" in lines[0] and "hello\\x1b[31m0" in lines[0]  # escapes cannot reach a terminal
    templated = invoke(
        broker, "--client-id", "template", "--count", "3", "--format", "{eventId}|{requestId}"
    )
    assert templated.stdout.splitlines() == ["p-00000000|", "p-00000001|", "p-00000002|"]


def test_aggregate_json_counts_match_what_was_sent(broker: Mosquitto) -> None:
    subscribe(broker, "agg")
    with Publisher(broker.port) as publisher:
        publisher.publish([event(str(n % 3), n, "a") for n in range(300)])
    result = invoke(
        broker, "--client-id", "agg", "--aggregate", "--json", "--every", "100", "--count", "300"
    )
    assert result.exit_code == 0, result.stderr
    reports = records(result)
    assert [r["type"] for r in reports] == ["aggregate"] * 3 + ["summary"]
    assert all(r["count"] == 100 for r in reports[:3])
    summary = reports[-1]
    assert summary["total"] == 300
    assert {a["accountId"]: a["count"] for a in summary["accounts"]} == {
        "0": 100,
        "1": 100,
        "2": 100,
    }
    assert all(a["lagMaxMs"] is not None for a in summary["accounts"])


def test_aggregate_plain_table_by_time_window(broker: Mosquitto) -> None:
    subscribe(broker, "window")
    with Publisher(broker.port) as publisher:
        publisher.publish([event("5", n, "w") for n in range(20)])
    result = invoke(
        broker, "--client-id", "window", "--aggregate", "--window", "0.2", "--count", "20"
    )
    assert result.exit_code == 0
    assert "# summary" in result.stdout
    assert any(line.startswith("5 ") and " 20 " in line for line in result.stdout.splitlines())


def test_payloads_that_are_not_events_are_shown_raw_and_acknowledged(broker: Mosquitto) -> None:
    subscribe(broker, "raw")
    with Publisher(broker.port) as publisher:
        publisher.publish_raw("track/9", [b"not json", b"", b"[1, 2]", b"\xff\xfe"])
        sent = publisher.publish([event("9", 1, "ok")])
    result = invoke(broker, "--client-id", "raw", "--count", "1")
    assert result.exit_code == 0
    assert result.stdout.count("RAW") == 4
    assert "(empty payload)" in result.stdout
    assert "not an event on track/9" in result.stderr
    with Publisher(broker.port) as publisher:
        marker = publisher.publish([event("9", 2, "marker")])
    again = invoke(broker, "--client-id", "raw", "--json", "--count", "1")
    # All acknowledged: nothing loops back, the next run starts at the marker.
    assert [line["eventId"] for line in records(again)] == sorted(marker)
    assert sent


def test_clean_discards_the_stored_session(broker: Mosquitto) -> None:
    subscribe(broker, "fresh")
    with Publisher(broker.port) as publisher:
        publisher.publish([event("1", n, "old") for n in range(5)])
    with Tail(broker.workdir / "tails", "--client-id", "fresh", "--clean", "--json",
              port=broker.port) as fresh:  # fmt: skip
        fresh.wait_subscribed()
        with Publisher(broker.port) as publisher:
            marker = publisher.publish([event("1", 0, "new")])
        fresh.wait_for_events(1)
        assert fresh.terminate() == 0
    # The marker came after the subscription; had the old session survived, its five
    # queued events would have come first.
    assert fresh.event_ids() == sorted(marker)
    assert "discarding the stored session" in fresh.stderr()


def test_options_come_from_the_environment_and_the_client_id_is_derived(broker: Mosquitto) -> None:
    env = {"MQTT_TAIL_ACCOUNT": "11 12", "MQTT_TAIL_TIMEOUT": "0.01"}
    with Tail(broker.workdir / "tails", port=broker.port, env=env) as first:
        # 10 ms without an event ends the run, subscribed or not: the option was read.
        assert first.process.wait(10) == EXIT_TIMEOUT
    derived = default_client_id(["11", "12"])
    assert f"client id {derived}" in first.stderr()
    env = {"MQTT_TAIL_ACCOUNT": "11 12"}
    assert "subscribed to track/11, track/12" in subscribe(broker, derived, env=env).stderr()
    assert derived == default_client_id(["11", "12"]) != default_client_id(["+"])


def test_password_on_the_command_line_is_warned_about(broker: Mosquitto) -> None:
    result = invoke(broker, "--username", "u", "--password", "p", "--timeout", "0.2")
    assert "shell history" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--account", "a/b"],
        ["--account", "#"],
        ["--json", "--format", "{data}"],
        ["--aggregate", "--format", "{data}"],
        ["--format", "{0}"],
        ["--format", "{data"],
        ["--format", "{nope}"],
        ["--reconnect-min", "5", "--reconnect-max", "1"],
        ["--port", "0"],
    ],
)
def test_usage_errors_exit_2_with_one_line(broker: Mosquitto, args: list[str]) -> None:
    result = invoke(broker, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_a_format_naming_no_field_is_a_usage_error_listing_the_fields(broker: Mosquitto) -> None:
    result = invoke(broker, "--format", "{nope}")

    assert result.exit_code == 2, result.output
    assert "Invalid value for '--format': unknown field {nope}; the fields are" in result.stderr
    assert "{requestId}, {traceId}" in result.stderr


def test_help_lists_every_format_field() -> None:
    result = CliRunner().invoke(tail, ["--help"], terminal_width=200)

    assert result.exit_code == 0
    assert all(f"{{{name}}}" in result.output for name in TEMPLATE_FIELDS)


def test_unreachable_broker_is_retried_until_the_timeout(broker: Mosquitto) -> None:
    broker.stop()
    result = invoke(broker, "--timeout", "0.5")
    assert result.exit_code == EXIT_TIMEOUT
    assert result.stderr.count("unreachable") == 1


def test_help_shows_an_example() -> None:
    result = CliRunner().invoke(tail, ["-h"])
    assert result.exit_code == 0
    assert "mqtt-tail --json | jq" in result.stdout
    assert "MQTT_TAIL_" in result.stdout


def test_refused_exit_code_is_distinct() -> None:
    assert EXIT_REFUSED not in (0, 1, 2, EXIT_TIMEOUT)


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ("subscription", "hint: 1 may not read track/+, track/2; an account's login reads only"),
        ("client-id", "hint: choose another --client-id"),
        ("protocol", "hint: use a broker that speaks MQTT 3.1.1"),
    ],
)
def test_every_kind_of_refusal_comes_with_a_hint(kind: str, hint: str) -> None:
    options = ConnectOptions(topics=["track/+", "track/2"], username="1", password="p")
    assert refusal_hint(Refused("refused", kind), options).startswith(hint)


class SlowUplink:
    """One connection to the broker whose client-to-broker bytes arrive ``delay`` late, as
    over a congested path; the broker's bytes and its close pass at once."""

    def __init__(self, broker: Mosquitto, delay: float) -> None:
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._broker_port = broker.port
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self._broker_port))
        self._sockets += [client, upstream]
        for source, sink, delay in ((client, upstream, self.delay), (upstream, client, 0.0)):
            thread = threading.Thread(target=self._pipe, args=(source, sink, delay), daemon=True)
            self._threads.append(thread)
            thread.start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                time.sleep(delay)  # the path's latency, not a wait for anything
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()


def test_count_exits_only_once_the_broker_has_the_acknowledgements(broker: Mosquitto) -> None:
    # The next run connecting with the same client id takes the session over; acks the
    # broker had not read yet are dropped with the old connection and shown again.
    subscribe(broker, "counted-slow")
    with Publisher(broker.port) as publisher:
        sent = publisher.publish([event("1", n, "s") for n in range(30)])
    uplink = SlowUplink(broker, delay=0.1)
    args = ["--client-id", "counted-slow", "--json"]
    first = CliRunner().invoke(tail, ["--port", str(uplink.port), *FAST, *args, "--count", "10"])
    second = invoke(broker, *args, "--count", "20")
    uplink.close()
    assert first.exit_code == 0, first.stderr
    assert_exactly_once([line["eventId"] for line in records(first) + records(second)], sent)


def test_a_client_id_of_another_login_is_a_usage_error_and_the_default_is_the_logins(
    broker: Mosquitto,
) -> None:
    login = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": "x"}
    refused = invoke(broker, "--client-id", "1:mine", env=login)
    assert refused.exit_code == 2
    assert "login 'reader' may not use '1:mine'" in refused.stderr
    assert "e.g. reader:tail-2" in refused.stderr
    assert default_client_id(["+"], "reader").startswith("reader:mqtt-tail-")
    assert default_client_id(["+"]).startswith("mqtt-tail-")  # an anonymous broker
