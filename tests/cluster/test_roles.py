"""The roles of mqtt/acl on the RabbitMQ cluster, with real paho clients."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from devkit.waiting import wait_until
from tracker_api.__main__ import cli
from tracker_api.ops.cluster import ctl
from tracker_api.ops.cluster_roles import routing_key, topic_regex

from .clients import Client, connected
from .conftest import ProvisionedCluster

REFUSED = 0x80
REPO = Path(__file__).resolve().parents[2]


def test_routing_keys_have_dots_for_slashes_and_rules_are_escaped() -> None:
    assert routing_key("track/1.x") == "track.1.x"
    assert topic_regex(("track/1.x",)) == r"^track\.1\.x$"
    assert topic_regex(("track/#", "tracker/status/#")) == r"^(track\.|tracker\.status\.)"
    assert topic_regex(()) == "^$"


def test_anonymous_and_wrong_passwords_are_refused(rabbit: ProvisionedCluster) -> None:
    port = rabbit.layout.nodes[0].mqtt_port
    for username, password in ((None, None), ("reader", "wrong"), ("guest", "guest")):
        client = Client(port, username, password)
        try:
            assert client.connect() != 0, f"{username} was let in"
        finally:
            client.close()


def test_the_tracker_publishes_track_and_a_reader_on_another_node_reads_it(
    rabbit: ProvisionedCluster,
) -> None:
    first, second = rabbit.layout.nodes[:2]
    with connected(second.mqtt_port, "reader", rabbit.passwords["reader"]) as reader:
        assert reader.subscribe("track/#") == 1
        with connected(first.mqtt_port, "tracker", rabbit.passwords["tracker"]) as tracker:
            mid = tracker.publish("track/x", "hello")
            wait_until(lambda: mid in tracker.acked, message="no PUBACK for the tracker")
        wait_until(lambda: ("track/x", b"hello") in reader.received())


def test_a_reader_cannot_publish(rabbit: ProvisionedCluster) -> None:
    port = rabbit.layout.nodes[0].mqtt_port
    with connected(port, "reader", rabbit.passwords["reader"]) as watcher:
        assert watcher.subscribe("track/#") == 1
        with connected(port, "reader", rabbit.passwords["reader"]) as reader:
            mid = reader.publish("track/1", "forged")
            wait_until(reader.lost.is_set, message="a forged publish was not refused")
            assert mid not in reader.acked
        with connected(port, "tracker", rabbit.passwords["tracker"]) as tracker:
            tracker.publish("track/1", "marker")
            wait_until(lambda: ("track/1", b"marker") in watcher.received())
        assert ("track/1", b"forged") not in watcher.received()


def test_an_account_reads_only_its_own_events_and_writes_only_its_own_ingest(
    rabbit: ProvisionedCluster,
) -> None:
    port = rabbit.layout.nodes[1].mqtt_port
    password = rabbit.passwords["1"]
    with connected(port, "tracker", rabbit.passwords["tracker"]) as tracker:
        assert tracker.subscribe("ingest/#") == 1
        with connected(port, "1", password) as account:
            assert account.subscribe("track/1") == 1
            assert account.subscribe("track/2") == REFUSED
        with connected(port, "1", password) as account:
            assert account.subscribe("track/+") == REFUSED
        with connected(port, "1", password) as account:
            assert account.subscribe("track/1") == 1
            tracker.publish("track/2", "not yours")
            tracker.publish("track/1", "yours")
            wait_until(lambda: account.received(), message="account 1 got nothing")
            assert account.received() == [("track/1", b"yours")]
            mid = account.publish("ingest/1", "reading")
            wait_until(lambda: mid in account.acked)
            wait_until(lambda: ("ingest/1", b"reading") in tracker.received())
            account.publish("ingest/2", "forged")
            wait_until(account.lost.is_set, message="a write to ingest/2 was not refused")
        with connected(port, "1", password) as account:
            account.publish("ingest/1", "after")
            wait_until(lambda: ("ingest/1", b"after") in tracker.received())
        assert ("ingest/2", b"forged") not in tracker.received()


def test_an_account_id_with_a_dot_matches_only_itself(rabbit: ProvisionedCluster) -> None:
    port = rabbit.layout.nodes[2].mqtt_port
    runner = CliRunner()
    base = ["--cluster-dir", str(rabbit.layout.base), "--node", "rabbit-3"]
    password = secrets.token_urlsafe(12)
    added = runner.invoke(cli, ["cluster-users", "add", "1.x", "--password", password, *base])
    assert added.exit_code == 0, added.output
    assert "set 1.x (account 1.x: reads track/1.x" in added.output
    with connected(port, "1.x", password) as account:
        # Unescaped, ^track\.1.x$ would match account 1ax's topic too.
        assert account.subscribe("track/1ax") == REFUSED
    with connected(port, "1.x", password) as account:
        assert account.subscribe("track/1.x") == 1
        with connected(port, "tracker", rabbit.passwords["tracker"]) as tracker:
            tracker.publish("track/1ax", "not yours")
            tracker.publish("track/1.x", "yours")
        wait_until(lambda: account.received())
        # RabbitMQ 3.10 hands a "." back as a level separator.
        assert account.received() == [("track/1/x", b"yours")]


def test_cluster_users_adds_lists_and_removes_logins(rabbit: ProvisionedCluster) -> None:
    runner = CliRunner()
    base = ["--cluster-dir", str(rabbit.layout.base)]
    added = runner.invoke(cli, ["cluster-users", "add", "7", "--generate", *base])
    assert added.exit_code == 0, added.output
    password = added.output.split("password: ")[1].strip()
    with connected(rabbit.layout.nodes[0].mqtt_port, "7", password) as account:
        assert account.subscribe("track/7") == 1
    listed = runner.invoke(cli, ["cluster-users", "list", *base])
    assert "7                    account 7: reads track/7" in listed.output
    assert "guest" not in listed.output
    removed = runner.invoke(cli, ["cluster-users", "remove", "7", *base])
    assert removed.output == "removed 7\n"
    client = Client(rabbit.layout.nodes[0].mqtt_port, "7", password)
    try:
        assert client.connect() != 0
    finally:
        client.close()
    again = runner.invoke(cli, ["cluster-users", "remove", "7", *base])
    assert again.exit_code == 1 and "no user '7' on the cluster" in again.output


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["add", "a/b", "--password", "x"], "Invalid account id"),
        (["add", "--role", "reader", "1", "--password", "x"], "is named reader, not 1"),
        (["add"], "give an account id, or --role"),
        (["add", "3", "--password", "x", "--node", "9"], "no node '9' in this cluster"),
        (["list", "--cluster-dir", "/nonexistent"], "no cluster was started under"),
    ],
)
def test_cluster_users_refuses_bad_input_with_one_line(
    rabbit: ProvisionedCluster, args: list[str], error: str
) -> None:
    base = [] if "--cluster-dir" in args else ["--cluster-dir", str(rabbit.layout.base)]
    result = CliRunner().invoke(cli, ["cluster-users", *args, *base])
    assert result.exit_code != 0
    assert error in result.output


def test_the_compose_logins_file_gives_real_clients_their_roles(
    rabbit: ProvisionedCluster, tmp_path: Path
) -> None:
    """The definitions deploy/cluster_logins.py writes for the compose nodes, imported as
    their boot does, with the cluster's own tracker and reader passwords."""
    password = secrets.token_urlsafe(12)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "MQTT_TRACKER_PASSWORD": rabbit.passwords["tracker"],
        "MQTT_READER_PASSWORD": rabbit.passwords["reader"],
        "MQTT_EXTRA_USERS": f"77:{password}",
    }
    script = REPO / "deploy" / "cluster_logins.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, check=True, timeout=30)
    definitions = tmp_path / "rabbitmq-definitions.json"
    definitions.chmod(0o644)  # read by rabbitmqctl, which may run as another user
    node = rabbit.layout.nodes[1]
    ctl(rabbit.layout, node, "import_definitions", str(definitions))

    port = rabbit.layout.nodes[2].mqtt_port
    with connected(port, "77", password) as device:
        assert device.subscribe("track/77") == 1
    with connected(port, "77", password) as device:
        assert device.subscribe("track/1") == REFUSED
    with connected(port, "reader", rabbit.passwords["reader"]) as reader:
        assert reader.subscribe("track/#") == 1
