"""mqtt-tail with several broker hosts: the next one is tried at once when one cannot be
reached or drops the connection, and bad host lists are refused before connecting. (That
the session itself resumes on another node of a real cluster is tests/cluster's part.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from devkit.broker import Mosquitto
from devkit.net import free_port
from devkit.tail import Publisher, Tail, event
from subscriber.cli import tail

# A wait between hosts would last 2.5 s or more: subscribing within 2 s proves there was none.
SLOW_BACKOFF = ["--reconnect-min", "5", "--reconnect-max", "5"]


def test_an_unreachable_host_in_the_environment_list_is_passed_over_at_once(
    broker: Mosquitto,
) -> None:
    hosts = f"127.0.0.1:{free_port()}, 127.0.0.1:{broker.port}"
    with Tail(
        broker.workdir / "tails", "--json", *SLOW_BACKOFF, port=1, env={"MQTT_TAIL_HOST": hosts}
    ) as shown:
        shown.wait_for_stderr("unreachable")  # the first host was tried: now the clock runs
        shown.wait_subscribed(timeout=2)
        assert f"connected to 127.0.0.1:{broker.port}" in shown.stderr()
        with Publisher(broker.port) as publisher:
            publisher.publish([event("1", 1)])
        assert shown.wait_for_events(1) == ["ev-00000001"]


def test_losing_the_host_moves_to_the_next_listed_at_once(
    broker: Mosquitto, tmp_path: Path
) -> None:
    other = Mosquitto(tmp_path / "other")
    other.start()
    try:
        with Tail(
            tmp_path / "tails", "--json", *SLOW_BACKOFF, "--host", f"127.0.0.1:{broker.port}",
            "--host", "127.0.0.1", port=other.port,
        ) as shown:  # fmt: skip
            shown.wait_subscribed()
            broker.kill()
            shown.wait_for_stderr(f"connected to 127.0.0.1:{other.port}", timeout=2)
            with Publisher(other.port) as publisher:
                publisher.publish([event("1", 2)])
            assert shown.wait_for_events(1) == ["ev-00000002"]
    finally:
        other.kill()


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["h1:x"], "'h1:x' has an invalid port"),
        (["h1", "h1:1883"], "'h1,h1:1883' lists a node twice (host 2 of 2)"),
        (["h1", ""], "'h1,' has no host (host 2 of 2)"),
        (["user@h1"], "'user@h1' has an invalid host: expected host[:port]"),
    ],
)
def test_a_bad_host_list_is_refused_with_one_line(hosts: list[str], message: str) -> None:
    args = [arg for host in hosts for arg in ("--host", host)]

    result = CliRunner().invoke(tail, args)

    assert result.exit_code == 2
    assert f"Invalid value for --host: {message}" in result.output
