"""docker-compose.yml started for real under podman, as an operator would: the images built
from the unchanged Dockerfiles, the .env.example profile, test passwords, the staged start of
scripts/compose_stack.py; then checked from this host and taken down."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.tail import Tail
from devkit.waiting import wait_until
from scripts.compose_stack import BASE_PROFILE, PROJECT, TIMINGS, TRACKER_IMAGE, Stack
from tests.compose.conftest import REPO, history_ids, request

PROFILES = [BASE_PROFILE]


@dataclass
class Base:
    stack: Stack
    before_seed: tuple[int, Any]  # GET /1 before the demo accounts were asked for
    seed_log: str  # the seed job's output on a plain `up`
    demo_seed_log: str  # its output with SEED_DEMO=true
    up_at: float  # when it was up (time.monotonic)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.stack.secrets.api_port}"

    @property
    def device(self) -> tuple[str, str]:
        return ("1", self.stack.secrets.device)


@pytest.fixture(scope="module")
def base(engine: Stack) -> Iterator[Base]:
    engine.up_base()
    seed_log = engine.logs(engine.container("seed"))
    before = request(
        f"http://127.0.0.1:{engine.secrets.api_port}/1",
        ("1", engine.secrets.device),
        event={"data": "x"},
    )
    up_at = time.monotonic()
    demo = engine.run_job("seed", PROFILES, SEED_DEMO="true")
    yield Base(engine, before, seed_log, demo, up_at)
    engine.down("down (after a failed test)")


@pytest.fixture(scope="module")
def subscriber(base: Base, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """mosquitto_sub on this host, as account 1's device login (client id 1:…), waiting
    for one event. Its persistent session subscribes first (-E: exit on the SUBACK), so an
    event sent from then on is delivered whenever the waiting process is connected."""
    out = tmp_path_factory.mktemp("subscriber") / "sub.out"
    secrets = base.stack.secrets
    command = [
        shutil.which("mosquitto_sub") or "mosquitto_sub",
        "-h", "127.0.0.1", "-p", str(secrets.mqtt_port), "-u", "1", "-P", secrets.device,
        "-i", f"1:compose-{uuid.uuid4().hex[:8]}", "-c", "-q", "1", "-t", "track/1",
    ]  # fmt: skip
    subscribed = subprocess.run([*command, "-E"], capture_output=True, text=True, timeout=30)
    assert subscribed.returncode == 0, subscribed.stderr
    with out.open("w") as sink:
        process = subprocess.Popen(
            [*command, "-C", "1", "-W", "60", "-v"], stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            yield out
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def received(out: Path) -> str:
    """The one message mosquitto_sub printed (-v: topic, space, payload), or ''."""
    lines = [line for line in out.read_text().splitlines() if line.startswith("track/")]
    return lines[0] if lines else ""


@pytest.fixture(scope="module")
def event(base: Base, subscriber: Path) -> dict[str, Any]:
    """One event sent with account 1's device login, once the subscriber is in. The tracker
    caches the answer "no account 1" it gave before the seed for TRACKER_ACCOUNT_CACHE_TTL
    (5 s): until then a 404, and nothing is published."""

    def send() -> tuple[int, Any] | None:
        answer = request(f"{base.api}/1", base.device, event={"data": "door opened"})
        return None if answer[0] == 404 else answer

    status, body = wait_until(send, timeout=15, interval=0.5, message="account 1 never appeared")
    assert status == 200, body
    assert body["message"] == "Request propagated to the subscribers!"
    return dict(body["event"])


def test_the_image_runs_as_its_unprivileged_user_with_a_healthcheck(base: Base) -> None:
    stack = base.stack
    inspect = stack.podman("image", "inspect", TRACKER_IMAGE).stdout
    [image] = json.loads(inspect)
    assert image["Config"]["User"] == "tracker"
    check = image["Healthcheck"]["Test"]
    assert check[0] == "CMD" and "/healthz" in " ".join(check)
    tracker = stack.container("tracker")
    assert stack.podman("exec", tracker, "id", "-u").stdout.strip() == "10001"
    assert stack.healthy(tracker)


def test_a_plain_up_adds_no_demo_accounts_and_demo_data_comes_when_asked(base: Base) -> None:
    assert base.seed_log == "seed: no demo accounts (SEED_DEMO=true adds them)"
    assert base.before_seed == (404, {"detail": "Account Id does not exist!"})
    assert "100 accounts (10 inactive): 100 created" in base.demo_seed_log
    assert (
        request(f"{base.api}/2", ("tracker", base.stack.secrets.tracker), event={"data": "x"})[0]
        == 200
    )


def test_an_event_with_a_device_login_reaches_a_subscriber_on_this_host(
    base: Base, event: dict[str, Any], subscriber: Path
) -> None:
    line = wait_until(lambda: received(subscriber), timeout=20, message="nothing received")
    topic, _, payload = line.partition(" ")
    assert topic == "track/1"
    assert json.loads(payload) == event
    assert event["accountId"] == "1" and event["data"] == "door opened"
    # Without the login, no event: the production stack needs one (TRACKER_HTTP_AUTH).
    assert request(f"{base.api}/1", event={"data": "x"})[0] == 401


def test_the_history_api_returns_the_event(base: Base, event: dict[str, Any]) -> None:
    wait_until(
        lambda: event["eventId"] in history_ids(base.stack.secrets.api_port, base.device),
        timeout=20, interval=0.2, message="the event never reached the archive",
    )  # fmt: skip
    # Another account's login sees none of account 1's history.
    status, _ = request(f"{base.api}/events?account=2&since=1h", base.device)
    assert status == 403


def test_mqtt_tail_on_this_host_shows_the_event(
    base: Base, event: dict[str, Any], tmp_path: Path
) -> None:
    stack = base.stack
    env = {"MQTT_TAIL_USERNAME": "1", "MQTT_TAIL_PASSWORD": stack.secrets.device}
    args = ["--host", "127.0.0.1", "--account", "1", "--json", "--count", "1"]
    args += ["--since", "1h", "--api", base.api]
    with Tail(tmp_path, *args, port=stack.secrets.mqtt_port, env=env) as tail:
        tail.process.wait(30)
        assert tail.process.returncode == 0, tail.stderr()
        [shown] = tail.records()
    assert {key: shown[key] for key in event} == event
    assert "replayed 1 event since" in tail.stderr()


def test_every_published_port_is_on_loopback(base: Base) -> None:
    stack = base.stack
    for service, port in (("mosquitto", 1883), ("tracker", 9000)):
        bindings = stack.podman("port", stack.container(service), f"{port}/tcp").stdout.split()
        assert bindings and all(b.startswith("127.0.0.1:") for b in bindings), (service, bindings)


def test_a_placeholder_password_stops_the_users_job_and_the_tracker_with_one_line(
    base: Base,
) -> None:
    stack = base.stack
    users = stack.compose(
        "run", "--rm", "--no-deps", "mqtt-users", profiles=PROFILES, check=False,
        MQTT_READER_PASSWORD="change-me-reader",
    )  # fmt: skip
    assert users.returncode == 1, users.stdout + users.stderr
    message = (
        "mqtt-users: MQTT_READER_PASSWORD is a placeholder (change-me...): set a real password"
    )
    assert message in users.stdout + users.stderr
    # Nothing was written: the broker still takes the real password.
    assert stack.healthy(stack.container("mosquitto"))
    tracker = stack.compose(
        "run", "--rm", "--no-deps", "tracker", profiles=PROFILES, check=False,
        MQTT_TRACKER_PASSWORD="CHANGEME",
    )  # fmt: skip
    assert tracker.returncode == 2, tracker.stdout + tracker.stderr
    assert (
        "tracker-api: invalid configuration: TRACKER_MQTT_URL: the password is a placeholder"
        in tracker.stdout + tracker.stderr
    )


def test_an_unedited_copy_of_env_example_starts_nothing(base: Base, tmp_path: Path) -> None:
    copy = tmp_path / ".env"
    shutil.copy(REPO / ".env.example", copy)
    project = f"{PROJECT}-example"
    stack = base.stack
    done = subprocess.run(
        [str(stack.podman_compose), "-p", project, "--env-file", str(copy)]
        + ["-f", str(REPO / "docker-compose.yml"), "up", "-d", "--no-deps", "mqtt-users"],
        env={**stack.engine_env(), "COMPOSE_PROFILES": BASE_PROFILE},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert re.search(r"set (MQTT_TRACKER|MQTT_READER|POSTGRES)_PASSWORD", done.stderr), done.stderr
    label = f"label=io.podman.compose.project={project}"
    assert stack.podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout == ""


def test_down_leaves_no_container_volume_or_network(base: Base) -> None:
    stack = base.stack
    anonymous = stack.anonymous_volumes()
    volumes = set(stack.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
    assert f"{PROJECT}_postgres-data" in volumes
    TIMINGS.append(("base stack checks", time.monotonic() - base.up_at))
    stack.down("base stack down")
    assert not stack.leftovers()
    remaining = set(stack.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
    assert not anonymous & remaining
