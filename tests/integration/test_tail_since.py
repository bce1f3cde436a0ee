"""``mqtt-tail --since``: replay from the archive, then live, and a lost session refilled.
Real Mosquitto, a real tracker process archiving to SQLite, real ``mqtt-tail`` processes."""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from devkit.broker import Mosquitto
from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated
from tests.helpers.history_stub import HistoryStub
from tests.helpers.proxy import Proxy
from tests.helpers.tail import assert_exactly_once
from tests.helpers.tracker import TrackerProcess
from tracker_api.passwords import PasswordFile

REPO = Path(__file__).resolve().parents[2]


def tracker_env(workdir: Path) -> dict[str, str]:
    """Its own state directory: the archive's lease is not shared with other trackers."""
    return {"TRACKER_STATE_DIR": str(workdir / "state")}


def database(path: Path) -> str:
    url = f"sqlite:///{path}"
    migrated(url).dispose()
    return url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, TrackerProcess]]:
    """One broker and one archiving tracker; each test reads from its own start time."""
    workdir = tmp_path_factory.mktemp("since")
    broker = Mosquitto(workdir / "broker")
    broker.start()
    try:
        with TrackerProcess(
            workdir, broker.url, database(workdir / "tracker.db"), **tracker_env(workdir)
        ) as tracker:
            yield broker, tracker
    finally:
        broker.kill()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def send(tracker: TrackerProcess, account: str, n: int, prefix: str) -> list[str]:
    """``n`` events in one batch request; their eventIds, each answered 200."""
    body = orjson.dumps([{"data": f"{prefix}-{i}"} for i in range(n)])
    response = httpx.post(f"{tracker.base_url}/{account}", content=body, timeout=30)
    assert response.status_code == 200, response.text
    return [event["eventId"] for event in response.json()["events"]]


def archived(tracker: TrackerProcess, since: str, **params: str) -> int:
    answer = httpx.get(
        f"{tracker.base_url}/events",
        params={"since": since, "limit": "10000", **params},
        timeout=10,
    )
    return len(answer.json()["events"])


def since_tail(tmp_path: Path, broker: Mosquitto, tracker: TrackerProcess, *args: str) -> Tail:
    return Tail(tmp_path, "--api", tracker.base_url, "--client-id", tmp_path.name[-20:], *args,
                port=broker.port)  # fmt: skip


def test_events_sent_before_any_tail_existed_are_replayed_in_time_order_then_live(
    stack: tuple[Mosquitto, TrackerProcess], tmp_path: Path
) -> None:
    broker, tracker = stack
    start = now()
    before = send(tracker, "1", 10, "old") + send(tracker, "2", 10, "old")
    with since_tail(tmp_path, broker, tracker, "--json", "--since", start) as tail:
        tail.wait_for_events(20)
        tail.wait_for_stderr("replayed 20 events since")
        live = send(tracker, "2", 5, "new")
        shown = tail.wait_for_events(25)
        records = tail.records()
        assert tail.terminate() == 0

    assert_exactly_once(shown, set(before) | set(live))
    assert shown[:20] == before  # history in time order, then the live events
    stamps = [record["timestamp"] for record in records[:20]]
    assert stamps == sorted(stamps)


def test_the_seam_under_steady_load_has_no_gap_and_no_repeat(
    stack: tuple[Mosquitto, TrackerProcess], tmp_path: Path
) -> None:
    broker, tracker = stack
    start = now()
    answered: list[str] = []
    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(base_url=tracker.base_url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                response = client.get("/1", params={"data": f"steady-{n}"})
                if response.status_code == 200:
                    answered.append(response.json()["event"]["eventId"])
                n += 1

    sender = threading.Thread(target=steady, daemon=True)
    sender.start()
    try:
        wait_until(lambda: len(answered) >= 200, timeout=10)
        with since_tail(tmp_path, broker, tracker, "--json", "--since", start) as tail:
            tail.wait_for_stderr("replayed")
            seam = len(answered)
            wait_until(lambda: len(answered) >= seam + 200, timeout=10)
            stop.set()
            sender.join(10)
            shown = tail.wait_for_events(len(answered))
            assert tail.terminate() == 0
    finally:
        stop.set()

    assert_exactly_once(shown, set(answered))


def test_aggregate_count_and_an_account_filter_include_the_replayed_events(
    stack: tuple[Mosquitto, TrackerProcess], tmp_path: Path
) -> None:
    broker, tracker = stack
    start = now()
    ones = send(tracker, "1", 4, "agg")
    twos = send(tracker, "2", 6, "agg")
    args = ("--json", "--account", "2", "--since", start)
    with since_tail(tmp_path / "count", broker, tracker, *args, "--count", "6") as tail:
        assert tail.process.wait(15) == 0  # --count ends the run inside the replay
        assert_exactly_once(tail.event_ids(), set(twos))
    with since_tail(tmp_path / "aggregate", broker, tracker, "--aggregate", "--json",
                    "--since", start) as tail:  # fmt: skip
        tail.wait_for_stderr("replayed 10 events")
        assert tail.terminate() == 0
        summary = tail.records()[-1]
    assert summary["type"] == "summary"
    assert summary["total"] == len(ones) + len(twos)
    counts = {row["accountId"]: row["count"] for row in summary["accounts"]}
    assert counts == {"1": 4, "2": 6}


def test_ctrl_c_mid_replay_exits_cleanly_with_what_was_shown(
    stack: tuple[Mosquitto, TrackerProcess], tmp_path: Path
) -> None:
    broker, tracker = stack
    start = now()
    sent = [event for _ in range(6) for event in send(tracker, "1", 1000, "bulk")]
    wait_until(lambda: archived(tracker, start) == len(sent), timeout=20)
    with since_tail(tmp_path, broker, tracker, "--json", "--since", start) as tail:
        wait_until(lambda: tail.out_path.stat().st_size > 0 or not tail.alive, timeout=15)
        tail.process.send_signal(signal.SIGINT)
        assert tail.process.wait(10) == 0
        shown = tail.event_ids()
    assert 0 < len(shown) < len(sent), "not interrupted mid-replay"
    assert shown == sent[: len(shown)]  # in order, each once, nothing half-written
    assert f"{len(shown)} events shown" in tail.stderr()
    assert "Traceback" not in tail.stderr()


def test_an_unreachable_api_is_one_line_and_exit_code_5(
    stack: tuple[Mosquitto, TrackerProcess], tmp_path: Path
) -> None:
    broker, _ = stack
    with Tail(tmp_path, "--since", "1m", "--api", "http://127.0.0.1:9", port=broker.port) as tail:
        assert tail.process.wait(15) == 5
    assert "history API http://127.0.0.1:9 unreachable" in tail.stderr()
    assert "hint: start the tracker" in tail.stderr()
    assert "Traceback" not in tail.stderr()


def test_since_without_an_api_is_refused_and_sends_the_login_nowhere(
    broker: Mosquitto, tmp_path: Path
) -> None:
    login = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": "r-secret"}
    with Tail(tmp_path, "--since", "1m", port=broker.port, env=login) as tail:
        assert tail.process.wait(15) == 2
    errors = [line for line in tail.stderr().splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "--since needs --api" in errors[0], tail.stderr()
    assert "subscribed" not in tail.stderr()  # refused before the broker, too


def test_the_api_named_in_the_environment_is_the_one_used(
    broker: Mosquitto, tmp_path: Path
) -> None:
    with HistoryStub() as api:
        env = {"MQTT_TAIL_API": api.url}
        with Tail(tmp_path, "--since", "1m", "--client-id", "env-api", port=broker.port,
                  env=env) as tail:  # fmt: skip
            tail.wait_for_stderr("replayed 0 events since")
            assert tail.terminate() == 0
    assert [request.path for request in api.requests][:1] == ["/events"]


@pytest.mark.parametrize("since", ["999999d", "0001-01-01T00:00:00+01:00"])
def test_a_since_no_datetime_can_hold_is_a_one_line_usage_error(tmp_path: Path, since: str) -> None:
    api = ("--api", "http://127.0.0.1:9")
    with Tail(tmp_path, "--since", since, *api, port=9) as tail:
        assert tail.process.wait(15) == 2
    errors = [line for line in tail.stderr().splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "out of range" in errors[0], tail.stderr()
    assert "Traceback" not in tail.stderr()


def test_an_account_login_cannot_replay_another_accounts_history(tmp_path: Path) -> None:
    passwords = PasswordFile(tmp_path / "passwd")
    for user, password in {"tracker": "t-secret", "1": "one-secret"}.items():
        passwords.set(user, password)
    passwords.save()
    broker = Mosquitto(
        tmp_path / "broker", password_file=passwords.path, acl_file=REPO / "mqtt" / "acl"
    )
    broker.start()
    try:
        url = database(tmp_path / "tracker.db")
        mqtt_url = f"mqtt://tracker:t-secret@127.0.0.1:{broker.port}"
        env = {"TRACKER_PASSWORD_FILE": str(passwords.path), **tracker_env(tmp_path)}
        with TrackerProcess(tmp_path, mqtt_url, url, **env) as tracker:
            login = {"MQTT_TAIL_USERNAME": "1", "MQTT_TAIL_PASSWORD": "one-secret"}
            args = ("--api", tracker.base_url, "--since", "1h")
            with Tail(tmp_path, *args, "--account", "2", port=broker.port, env=login) as other:
                assert other.process.wait(15) == 4
            with Tail(tmp_path, *args, "--account", "1", "--json", "--count", "1",
                      port=broker.port, env=login) as own:  # fmt: skip
                own.wait_for_stderr("replayed 0 events")
                event = send(tracker, "1", 1, "own")
                assert own.process.wait(15) == 0
                assert own.event_ids() == event
    finally:
        broker.kill()
    assert "history API refused (403): This login may read only its own account's history" in (
        other.stderr()
    )
    assert "hint: 1 may not read the history of track/2" in other.stderr()


def test_a_session_lost_on_the_broker_is_refilled_from_the_archive(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        url = database(tmp_path / "tracker.db")
        with (
            TrackerProcess(tmp_path, broker.url, url, **tracker_env(tmp_path)) as tracker,
            Proxy(broker.port) as proxy,
            Tail(
                tmp_path, "--json", "--api", tracker.base_url, "--client-id", "gap", port=proxy.port
            ) as tail,  # fmt: skip
        ):
            tail.wait_subscribed()
            start = now()
            first = send(tracker, "1", 3, "before")
            tail.wait_for_events(3)
            proxy.blackhole()  # the tail's path goes silent; its session queues what follows
            tail.wait_for_stderr("connection lost")
            missed = send(tracker, "1", 4, "gap") + send(tracker, "2", 3, "gap")
            wait_until(lambda: archived(tracker, start) == 10, timeout=10)
            # A restart without its database: the broker forgets every session and queue.
            broker.stop()
            (broker.data_dir / "mosquitto.db").unlink()
            broker.start()
            wait_until(lambda: tracker.get_ok("/readyz"), timeout=15)
            proxy.restore()
            tail.wait_for_stderr("recovered 7 events from the archive", timeout=20)
            after = send(tracker, "2", 2, "after")
            shown = tail.wait_for_events(12)
            assert tail.terminate() == 0
    finally:
        broker.kill()
    assert_exactly_once(shown, set(first + missed + after))
    assert "the broker has no session for it" in tail.stderr()


def test_replayed_timestamps_and_topics_reach_a_terminal_escaped(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The archive's answer is data like any event: a hostile history API (or row) must
    not reach the terminal with escape sequences, whatever field carries them."""
    hostile = {
        "eventId": "e-1",
        "accountId": "1\x1b]0;owned\x07",  # the replay's topic is made of it
        "timestamp": "2026-11-28T\x1b[31m12:00:00.000Z",
        "data": "d",
    }
    shown = []
    with HistoryStub(lambda _query: ([orjson.dumps(hostile)], {})) as api:
        for n, extra in enumerate([[], ["--format", "{topic} {timestamp} {accountId}"]]):
            args = ("--since", "1m", "--api", api.url, "--count", "1", "--client-id", f"esc{n}")
            with Tail(tmp_path / str(n), *args, *extra, port=broker.port, terminal=True) as tail:
                assert tail.process.wait(15) == 0, tail.stderr()
                wait_until(lambda tail=tail: "d" in tail.stdout(), timeout=5)
                shown.append(tail.out_path.read_bytes())

    for output in shown:
        assert b"\x1b]0;owned" not in output and b"\x1b[31m12" not in output, output
    assert b"\\x1b[31m12:00:0" in shown[0]  # the clock column, escaped
    assert b"track/1\\x1b]0;owned\\x07" in shown[1] and b"\\x1b[31m12:00:00" in shown[1]


@contextmanager
def archive_held_back(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process holds the database's write lock: the archive's commits wait and
    fail (``behind: database unavailable``) while the history can still be read."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield blocker
    finally:
        blocker.close()


def watermark(tracker: TrackerProcess) -> str | None:
    answer = httpx.get(f"{tracker.base_url}/events", params={"since": "1m"}, timeout=5)
    return answer.headers.get("x-archive-watermark")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[Mosquitto, TrackerProcess, Path]]:
    """A broker and an archiving tracker whose SQLite file a test may lock."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    path = tmp_path / "tracker.db"
    try:
        with TrackerProcess(
            tmp_path, broker.url, database(path), **tracker_env(tmp_path)
        ) as tracker:
            wait_until(lambda: watermark(tracker), timeout=10, message="the archive never marked")
            yield broker, tracker, path
    finally:
        broker.kill()


def test_events_acknowledged_before_the_subscription_but_archived_late_are_shown_once(
    own_stack: tuple[Mosquitto, TrackerProcess, Path], tmp_path: Path
) -> None:
    broker, tracker, path = own_stack
    start = now()
    early = send(tracker, "1", 3, "early")
    wait_until(lambda: archived(tracker, start) == 3, timeout=10)
    with archive_held_back(path) as blocker:
        late = send(tracker, "1", 5, "late")  # acknowledged: 200 after the broker's PUBACK
        tail = since_tail(tmp_path, broker, tracker, "--json", "--since", start)
        with tail:
            tail.wait_for_stderr("waiting for the archive to store what came before", 15)
            blocker.rollback()  # the archive catches up
            tail.wait_for_stderr("replayed 8 events", 20)
            live = send(tracker, "2", 2, "live")
            shown = tail.wait_for_events(10)
            assert tail.terminate() == 0
    assert_exactly_once(shown, set(early + late + live))
    assert shown[:3] == early
    assert "may be missing" not in tail.stderr()


def test_a_seam_the_archive_does_not_cover_in_time_is_named_with_its_span(
    own_stack: tuple[Mosquitto, TrackerProcess, Path], tmp_path: Path
) -> None:
    broker, tracker, path = own_stack
    start = now()
    with archive_held_back(path):
        late = send(tracker, "1", 5, "late")
        wait = {"MQTT_TAIL_ARCHIVE_WAIT": "1.5"}  # --archive-wait
        with Tail(tmp_path / "first", "--api", tracker.base_url, "--json", "--since", start,
                  port=broker.port, env=wait) as tail:  # fmt: skip
            tail.wait_for_stderr("replayed 0 events", 15)
            live = send(tracker, "2", 2, "live")
            shown = tail.wait_for_events(2)
            assert tail.terminate() == 0
    warnings = [line for line in tail.stderr().splitlines() if "may be missing" in line]
    assert len(warnings) == 1, f"the uncovered span was not named:\n{tail.stderr()}"
    warning = warnings[0]
    assert "the archive has stored everything only up to " in warning
    assert "replay them later with --since " in warning
    assert_exactly_once(shown, set(live))
    # Once the archive caught up, a replay from the span's start shows what was missed.
    since = warning.rsplit("--since ", 1)[1].strip()
    wait_until(lambda: archived(tracker, start) == 7, timeout=20)
    with since_tail(tmp_path / "later", broker, tracker, "--json", "--since", since) as later:
        later.wait_for_stderr("replayed")
        assert set(late) <= set(later.event_ids())
        assert later.terminate() == 0
