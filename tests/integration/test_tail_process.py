"""mqtt-tail as a real process: filters, bad payloads, pipes, refusals."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from sqlmodel import Session

from devkit.broker import Mosquitto
from devkit.tail import TAIL, Publisher, Tail, event
from devkit.waiting import wait_until
from subscriber.cli import EXIT_REFUSED
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.api import api_client
from tests.helpers.tail import assert_exactly_once
from tracker_api.storage.models import Account


def test_wildcard_sees_every_account_and_filters_only_theirs(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with (
        Tail(tmp_path, "--json", port=broker.port) as everything,
        Tail(tmp_path, "--json", "--account", "2", port=broker.port) as only_two,
    ):
        everything.wait_subscribed()
        only_two.wait_subscribed()
        with Publisher(broker.port) as publisher:
            sent = publisher.publish([event(str(n % 4), n, "w") for n in range(200)])
        everything.wait_for_events(200)
        only_two.wait_for_events(50)
        assert everything.terminate() == 0
        assert only_two.terminate() == 0
    assert_exactly_once(everything.event_ids(), sent)
    assert {r["accountId"] for r in only_two.records()} == {"2"}
    assert len(only_two.event_ids()) == 50
    assert "client id mqtt-tail-" in everything.stderr()
    assert everything.stdout().count("\n") == 200  # diagnostics never reach stdout


def test_malformed_empty_and_huge_payloads_do_not_crash_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # As large as the broker lets through (mqtt/conf.d/limits.conf refuses bigger ones).
    huge = orjson.dumps(event("1", 2, "big", data="x" * 24_000))
    with Tail(tmp_path, "--json", port=broker.port) as tail:
        tail.wait_subscribed()
        with Publisher(broker.port) as publisher:
            publisher.publish_raw("track/1", [b"{not json", b"", b"\x00\xff" * 1000])
            publisher.publish_raw("track/1", [huge])
            sent = publisher.publish([event("1", 3, "after")])
        tail.wait_for_events(2)
        assert tail.alive
        assert tail.terminate() == 0
    assert tail.event_ids() == ["big-00000002", "after-00000003"]
    assert len(tail.records()[0]["data"]) == 24_000
    assert tail.stderr().count("not an event") == 3
    assert sent


def test_broken_pipe_exits_quietly(broker: Mosquitto, tmp_path: Path) -> None:
    args = [str(TAIL), "--port", str(broker.port), "--client-id", "piped"]
    with Tail(tmp_path, "--client-id", "piped", "--timeout", "0.3", port=broker.port) as first:
        assert first.process.wait(10) == 3
    with Publisher(broker.port) as publisher:
        publisher.publish([event("1", n, "pipe") for n in range(2000)])
    shell = f"{' '.join(args)} | head -n 1"
    done = subprocess.run(shell, shell=True, capture_output=True, timeout=20, check=False)
    assert done.returncode == 0
    assert done.stdout.count(b"\n") == 1
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr


def test_a_closed_pipe_ends_a_quiet_tail(broker: Mosquitto, tmp_path: Path) -> None:
    """`mqtt-tail | head -n 1`: the reader has its line and goes; no event comes after it,
    so no write would ever fail, yet the tail ends, as `tail -f` does."""
    with Tail(tmp_path, "--client-id", "quiet-pipe", "--timeout", "0.3", port=broker.port) as first:
        assert first.process.wait(10) == 3
    with Publisher(broker.port) as publisher:
        publisher.publish([event("1", n, "quiet") for n in range(3)])
    args = [str(TAIL), "--port", str(broker.port), "--client-id", "quiet-pipe"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tail:
        try:
            assert tail.stdout is not None and tail.stderr is not None
            assert b"data 0" in tail.stdout.readline()  # the first event
            tail.stdout.close()  # the reader is gone; the tail has written all it had
            assert tail.wait(10) == 0
            assert b"Traceback" not in tail.stderr.read()
        finally:
            if tail.poll() is None:
                tail.kill()


def _secured_broker(tmp_path: Path) -> Mosquitto:
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "reader", "secret"], check=True)
    passwords.chmod(0o600)
    acl = tmp_path / "acl"
    acl.write_text("user reader\ntopic read track/1\n")
    broker = Mosquitto(tmp_path / "secure", password_file=passwords, acl_file=acl)
    broker.start()
    return broker


@pytest.mark.parametrize(
    ("env", "hint"),
    [
        ({}, "hint: no username given (MQTT_TAIL_USERNAME or --username)"),
        ({"MQTT_TAIL_USERNAME": "reader"}, "hint: no password given for reader"),
        (
            {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": "wrong"},
            "hint: the broker does not accept reader with this password",
        ),
    ],
)
def test_a_refused_login_says_why_then_how_to_fix_it(
    tmp_path: Path, env: dict[str, str], hint: str
) -> None:
    # Mosquitto 2.0.11 grants an ACL-denied subscription (SUBACK 0, then delivers
    # nothing), so the SUBACK 0x80 path is covered in tests/subscriber/test_session.py.
    broker = _secured_broker(tmp_path)
    try:
        with Tail(tmp_path, port=broker.port, env=env) as bad:
            assert bad.process.wait(10) == EXIT_REFUSED
    finally:
        broker.kill()
    lines = bad.stderr().strip().splitlines()
    assert lines[-2] == "Error: connection refused: not authorised"
    assert lines[-1].startswith(hint)
    assert lines[-1].endswith("set -a; . var/credentials.env; set +a")
    assert "events shown" not in bad.stderr()  # no summary of nothing


def test_the_right_login_subscribes_without_warnings(tmp_path: Path) -> None:
    broker = _secured_broker(tmp_path)
    try:
        env = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": "secret"}
        with Tail(tmp_path, port=broker.port, env={**env, "MQTT_TAIL_ACCOUNT": "1"}) as allowed:
            allowed.wait_subscribed()
            assert allowed.terminate() == 0
    finally:
        broker.kill()
    assert "shell history" not in allowed.stderr()
    assert "0 events shown" in allowed.stderr()


def test_a_stopping_broker_is_reported_as_such(broker: Mosquitto, tmp_path: Path) -> None:
    with Tail(tmp_path, "--json", port=broker.port) as tail:
        tail.wait_subscribed()
        broker.stop()
        tail.wait_for_stderr("connection lost: closed by the broker; reconnecting")
        assert tail.terminate() == 0
    assert "Unspecified" not in tail.stderr()


def test_two_accounts_may_use_the_same_idempotency_key(broker: Mosquitto, tmp_path: Path) -> None:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    with Session(engine) as session:
        session.add(Account(account_id="3", account_name="Three"))
        session.commit()
    engine.dispose()
    order = {"Idempotency-Key": "order-1"}
    with (
        Tail(tmp_path, "--json", port=broker.port) as tail,
        api_client(tmp_path, f"mqtt://127.0.0.1:{broker.port}", database_url=url) as api,
    ):
        tail.wait_subscribed()
        answers = [api.get(f"/{account}", params={"data": account}, headers=order)
                   for account in ("2", "3", "3")]  # fmt: skip
        tail.wait_for_events(2)
        # A marker after the retry: once it is shown, the retry has been handled too.
        api.get("/1", params={"data": "marker"})
        tail.wait_for_events(3)
        assert tail.terminate() == 0
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    shown = [(r["accountId"], r["eventId"], r["data"]) for r in tail.records()]
    assert shown[:2] == [("2", "order-1", "2"), ("3", "order-1", "3")]
    assert [row[0] for row in shown] == ["2", "3", "1"]
    assert "3 events shown, 1 duplicate dropped" in tail.stderr()


def test_json_on_a_terminal_escapes_terminal_controls(broker: Mosquitto, tmp_path: Path) -> None:
    hostile = "\x9b2J\u202eevil\x1b[31m é"
    with Tail(tmp_path, "--json", port=broker.port, terminal=True) as tail:
        tail.wait_subscribed()
        with Publisher(broker.port) as publisher:
            publisher.publish([event("1", 1, "tty", data=hostile)])
        wait_until(lambda: "tty-00000001" in tail.stdout(), timeout=10)
        assert tail.terminate() == 0
    shown = tail.out_path.read_bytes()
    assert b"\xc2\x9b" not in shown and b"\xe2\x80\xae" not in shown and b"\x1b" not in shown
    assert b"\\u009b2J\\u202eevil\\u001b[31m \xc3\xa9" in shown
    assert [record["data"] for record in tail.records()] == [hostile]


def test_aggregate_on_a_terminal_shows_a_live_table_and_a_final_one_on_ctrl_c(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with Tail(tmp_path, "--aggregate", port=broker.port, terminal=True) as tail:
        tail.wait_subscribed()
        with Publisher(broker.port) as publisher:
            publisher.publish([event("7", n, "live") for n in range(3)])
        # Three events are far below --every's 500: only a timed redraw shows them.
        wait_until(lambda: "3 in total" in tail.stdout(), timeout=5, message=tail.stdout())
        assert "summary" not in tail.stdout()
        tail.process.send_signal(signal.SIGINT)
        assert tail.process.wait(10) == 0
    wait_until(lambda: "summary: 3 events in" in tail.stdout(), timeout=5, message=tail.stdout())


def test_a_second_tail_with_the_same_client_id_makes_the_first_yield_and_say_so(
    broker: Mosquitto, tmp_path: Path
) -> None:
    args = ("--json", "--client-id", "shared-id")
    with Tail(tmp_path, *args, port=broker.port) as first:
        first.wait_subscribed()
        with Tail(tmp_path, *args, port=broker.port) as second:
            # Each connection makes the broker drop the other: the first gives up.
            assert first.process.wait(30) == EXIT_REFUSED
            with Publisher(broker.port) as publisher:
                sent = publisher.publish([event("1", n) for n in range(20)])
            second.wait_for_events(20)
            assert second.alive
            assert second.terminate() == 0

    said = first.stderr()
    assert "client id shared-id is in use by another client" in said
    assert "give each its own session: --client-id" in said
    assert "Traceback" not in said
    assert_exactly_once(second.event_ids(), sent)
