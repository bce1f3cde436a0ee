"""The `cluster` profile of deploy/cluster.compose.yml started for real under podman, alone
(COMPOSE_PROFILES=cluster): 3 RabbitMQ nodes, PostgreSQL, two trackers behind HAProxy;
checked from this host through HAProxy, a broker node killed under load, then taken down."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devkit.waiting import wait_until
from scripts.compose_stack import CLUSTER_PROFILE, NODES, NOTES, PROJECT, TIMINGS, Stack
from tests.compose.conftest import history_ids, request

# The load of the kill test: bounded in count and time, on 127.0.0.1 only.
SENDERS = 4
ATTEMPTS = 2000  # requests per sender at most
LOAD_SECONDS = 60
KILL_AFTER = 300  # acknowledged events before the SIGKILL
AFTER_KILL = 300  # acknowledged events after it, to show the cluster serves on
RETRY_PAUSE = 0.2  # after a 503 or 504 (Retry-After: 1, shortened for the test)


@dataclass
class Cluster:
    stack: Stack
    up_at: float  # when it was up (time.monotonic)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.stack.secrets.cluster_port}"

    @property
    def device(self) -> tuple[str, str]:
        return ("1", self.stack.secrets.device)


@pytest.fixture(scope="module")
def cluster(engine: Stack) -> Iterator[Cluster]:
    engine.up_cluster(trackers=2)
    yield Cluster(engine, time.monotonic())
    engine.down("down (after a failed test)")


def request_id(url: str, data: str, login: tuple[str, str]) -> str:
    """POST one event as JSON; the X-Request-ID of the 200."""
    import base64

    token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    query = urllib.request.Request(
        url,
        data=json.dumps({"data": data}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(query, timeout=10) as answer:
        assert answer.status == 200
        return str(answer.headers["x-request-id"])


def test_the_cluster_profile_starts_only_the_cluster_and_its_database(cluster: Cluster) -> None:
    stack = cluster.stack
    running = Counter(container.service for container in stack.containers())
    assert running == {
        "cluster-logins": 1,
        "cluster-database": 1,
        **dict.fromkeys(NODES, 1),
        "postgres": 1,
        "cluster-tracker": 2,
        "cluster-haproxy": 1,
    }
    # What podman-compose itself resolves for COMPOSE_PROFILES=cluster: no Mosquitto.
    services = stack.compose("config", "--services", profiles=[CLUSTER_PROFILE], cluster=True)
    assert set(services.stdout.split()) == set(running)


def test_the_nodes_form_one_cluster(cluster: Cluster) -> None:
    stack = cluster.stack
    status = stack.podman(
        "exec", stack.container("rabbit-1"), "rabbitmqctl", "-q", "cluster_status"
    ).stdout
    for node in NODES:
        assert f"rabbit@{node}" in status


def test_both_trackers_answer_a_device_login_through_haproxy(cluster: Cluster) -> None:
    prefixes = {
        request_id(f"{cluster.api}/1", f"hello-{n}", cluster.device).rpartition("-")[0]
        for n in range(6)
    }
    assert len(prefixes) == 2  # round robin over the two replicas, each its own prefix
    assert request(f"{cluster.api}/1", event={"data": "x"})[0] == 401  # a login is needed here too


# Run inside a tracker container (the image has paho): login 1 asks for the archive's
# client id on the node the archive consumes from; prints the CONNACK's reason.
TAKEOVER = """
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
answered = threading.Event()
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tracker:archive", clean_session=False)
client.username_pw_set("1", sys.argv[2])
client.on_connect = lambda c, u, f, code, p: (print(code), answered.set())
client.connect(sys.argv[1], 1883)
client.loop_start()
answered.wait(15)
client.loop_stop()
"""


def test_a_device_login_cannot_take_the_archives_session_nor_close_its_connection(
    cluster: Cluster,
) -> None:
    """The nodes run the session owner plugin (deploy/rabbitmq/Dockerfile): login 1 is
    refused the id tracker:archive at login, and the archive's connection stays."""
    stack = cluster.stack
    node = archive_node(stack)
    connects = sum(
        stack.logs(c.name, 500).count("as tracker:archive")
        for c in stack.containers_of("cluster-tracker")
    )
    tracker = stack.container("cluster-tracker")
    for _ in range(3):
        done = stack.podman(
            "exec", tracker, "python", "-c", TAKEOVER, node, stack.secrets.device, timeout=60
        )
        assert done.stdout.strip() == "Not authorized", done.stdout + done.stderr
    after = sum(
        stack.logs(c.name, 500).count("as tracker:archive")
        for c in stack.containers_of("cluster-tracker")
    )
    assert after == connects, "the archive reconnected: an attempt closed its connection"
    assert "session_owner: refused login 1 with client id tracker:archive" in stack.logs(
        stack.container(node), 200
    )


def archive_node(stack: Stack) -> str:
    """The node the archive (one leader over the trackers) consumes track/# from."""
    pattern = re.compile(r"connected to broker (rabbit-\d):1883 as tracker:archive")
    for container in stack.containers_of("cluster-tracker"):
        found = pattern.findall(stack.logs(container.name, 200))
        if found:
            return found[-1]
    raise AssertionError("no tracker holds the archive")


@dataclass
class Load:
    """What the senders of the kill test saw, shared between their threads."""

    acknowledged: list[str]
    outcomes: Counter[str]
    acked_at: list[float]  # time.monotonic of each 200
    killed_at: float = 0.0

    def after_kill(self) -> int:
        return len(self.acknowledged) - KILL_AFTER if self.killed_at else 0

    def longest_gap(self) -> float:
        """The longest time after the kill without a 200."""
        times = [self.killed_at] + [t for t in self.acked_at if t >= self.killed_at]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def test_a_sigkill_of_one_rabbitmq_node_under_load_loses_no_acknowledged_event(
    cluster: Cluster,
) -> None:
    """Events go through HAProxy to both trackers while the node the archive reads from is
    SIGKILLed. Each sender behaves as the README asks a client to: a 503 or 504 is sent
    again with the same eventId. Every event answered 200 must reach the archive (a
    subscriber of its own, on a quorum-queue session) all the same, and the cluster must go
    on acknowledging without the node."""
    stack = cluster.stack
    victim = stack.container(archive_node(stack))
    load = Load([], Counter(), [])
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_SECONDS

    def done() -> bool:
        return time.monotonic() > deadline or load.after_kill() >= AFTER_KILL

    def send(worker: int) -> None:
        n, attempts = 0, 0
        while attempts < ATTEMPTS and not done():
            attempts += 1
            event_id = f"kill-{worker}-{n}"
            try:
                status, _ = request(
                    f"{cluster.api}/1",
                    cluster.device,
                    timeout=5,
                    event={"data": "load", "eventId": event_id},
                )
            except OSError:
                status = 0  # no answer: not acknowledged
            with lock:
                load.outcomes[str(status)] += 1
                if status == 200:
                    load.acknowledged.append(event_id)
                    load.acked_at.append(time.monotonic())
                    if len(load.acknowledged) == KILL_AFTER:
                        stack.podman("kill", "--signal", "KILL", victim)
                        load.killed_at = time.monotonic()
            if status == 200:
                n += 1
            else:
                time.sleep(RETRY_PAUSE)

    senders = [threading.Thread(target=send, args=(w,)) for w in range(SENDERS)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(LOAD_SECONDS + 30)
    assert load.killed_at, f"fewer than {KILL_AFTER} events acknowledged: {load.outcomes}"
    assert load.after_kill() >= AFTER_KILL, (
        f"the cluster stopped acknowledging: {load.outcomes}, {load.after_kill()} after the "
        f"kill, longest gap {load.longest_gap():.1f} s"
    )

    reader = ("reader", stack.secrets.reader)
    missing: set[str] = set()

    def archived() -> bool:
        missing.clear()
        missing.update(set(load.acknowledged) - history_ids(stack.secrets.cluster_port, reader))
        return not missing

    wait_until(archived, timeout=90, interval=1, message=f"acknowledged but lost: {missing}")
    NOTES.append(
        f"SIGKILL of {victim} under load: {len(load.acknowledged)} events acknowledged "
        f"({load.after_kill()} after the kill), 0 lost; longest time without a 200 after "
        f"the kill {load.longest_gap():.1f} s; answers {dict(load.outcomes)}"
    )


def test_down_leaves_no_container_volume_or_network_and_no_scaled_replica(
    cluster: Cluster,
) -> None:
    stack = cluster.stack
    assert len(stack.containers_of("cluster-tracker")) == 2
    anonymous = stack.anonymous_volumes()
    volumes = set(stack.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
    assert {f"{PROJECT}_rabbit-1-data", f"{PROJECT}_cluster-logins"} <= volumes
    TIMINGS.append(("cluster stack checks", time.monotonic() - cluster.up_at))
    left_by_compose = stack.down("cluster stack down")
    assert not stack.leftovers()
    remaining = set(stack.podman("volume", "ls", "--format", "{{.Name}}").stdout.split())
    assert not anonymous & remaining
    NOTES.append(f"podman-compose down -v left behind (removed by label): {left_by_compose}")
