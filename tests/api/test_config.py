"""Configuration: defaults, parsing of the broker URL, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracker_api.config import ConfigError, load_settings, redact
from tracker_api.storage.db import make_engine

SECRET = "s3cr3t-Pa55"


def test_defaults_match_the_documented_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRACKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no .env file here

    settings = load_settings()

    assert settings.database_url == "sqlite:///var/tracker.db"
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 9000, 1)
    assert settings.max_data_bytes == 4096


def test_environment_variables_use_the_tracker_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_PORT", "9123")
    monkeypatch.setenv("TRACKER_WORKERS", "3")

    settings = load_settings()

    assert (settings.port, settings.workers) == (9123, 3)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", ("broker", 1883, False, None, None)),
        ("mqtts://broker", ("broker", 8883, True, None, None)),
        ("mqtt://user:p%40ss@10.0.0.5:1999", ("10.0.0.5", 1999, False, "user", "p@ss")),
    ],
)
def test_broker_url_is_parsed(url: str, expected: tuple[object, ...]) -> None:
    broker = load_settings(mqtt_url=url).broker

    assert (broker.host, broker.port, broker.tls, broker.username, broker.password) == expected


def test_a_cluster_is_a_list_of_hosts_sharing_one_scheme_and_login() -> None:
    url = "mqtts://tracker:pa%2Css,word@h1:1884,h2,[::1]:1886"

    brokers = load_settings(mqtt_url=url).brokers

    assert [(b.host, b.port) for b in brokers] == [("h1", 1884), ("h2", 8883), ("::1", 1886)]
    assert {(b.tls, b.username, b.password) for b in brokers} == {(True, "tracker", "pa,ss,word")}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mqtt_url": "mqtt://h1:1884,,h3"}, "TRACKER_MQTT_URL has no host (host 2 of 3)"),
        ({"mqtt_url": "mqtt://h1,h2:x"}, "TRACKER_MQTT_URL has an invalid port (host 2 of 2)"),
        ({"mqtt_url": "mqtt://h1:1883,h1"}, "TRACKER_MQTT_URL lists a node twice (host 2 of 2)"),
        ({"mqtt_url": "mqtt://h1,mqtt://h2"}, "list the nodes of a cluster as hosts of one URL"),
        ({"port": 70000}, "TRACKER_PORT: Input should be less than or equal to 65535"),
        ({"workers": 0}, "TRACKER_WORKERS: Input should be greater than or equal to 1"),
        ({"mqtt_url": "http://x"}, "TRACKER_MQTT_URL must start with mqtt:// or mqtts://"),
        ({"mqtt_url": "mqtt://:1883"}, "TRACKER_MQTT_URL has no host"),
        ({"mqtt_url": "mqtt://h:99999"}, "TRACKER_MQTT_URL has an invalid port"),
        ({"database_url": "tracker.db"}, "TRACKER_DATABASE_URL is not a URL"),
        ({"database_url": "postgresql://u:pw@db:abc/x"}, "TRACKER_DATABASE_URL is not a valid"),
        ({"database_url": "nosuchdb://x/y"}, "TRACKER_DATABASE_URL: unsupported database"),
        ({"log_level": "LOUD"}, "TRACKER_LOG_LEVEL: Input should be"),
    ],
)
def test_invalid_values_fail_with_one_readable_line(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(**overrides)

    assert message in str(error.value)
    assert "***" not in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"bob:{SECRET}@db/x", "TRACKER_DATABASE_URL is not a URL"),
        (f"postgresql://bob:{SECRET}@db:abc/x", "TRACKER_DATABASE_URL is not a valid URL"),
        (f"nosuchdb://bob:{SECRET}@x/y", "TRACKER_DATABASE_URL: unsupported database"),
    ],
)
def test_make_engine_refuses_a_bad_url_as_the_settings_do(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as from_settings:
        load_settings(database_url=url)
    with pytest.raises(ConfigError) as from_engine:
        make_engine(url)

    assert message in str(from_engine.value)
    assert str(from_engine.value) in str(from_settings.value)  # the settings name the field
    assert SECRET not in str(from_engine.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRACKER_PORT", "not-a-port", "TRACKER_PORT"),
        ("TRACKER_DATABASE_URL", "nosuchdb://x/y", "TRACKER_DATABASE_URL"),
        ("TRACKER_DATABASE_URL", f"nosuchdb://bob:{SECRET}@x/y", "unsupported database"),
        ("TRACKER_DATABASE_URL", f"postgresql+psycopg://bob:{SECRET}@db:abc/x", "not a valid"),
        ("TRACKER_DATABASE_URL", f"postgresql://bob:{SECRET}@[::1/x", "not a valid URL"),
        ("TRACKER_DATABASE_URL", f"bob:{SECRET}@db/x", "not a URL"),
        ("TRACKER_MQTT_URL", f"mqtt://bob:{SECRET}@broker:abc", "invalid port"),
        ("TRACKER_MQTT_URL", f"http://bob:{SECRET}@broker", "must start with mqtt://"),
        # A password copied unedited from an example works, and is known to all.
        ("TRACKER_MQTT_URL", "mqtt://tracker:change-me-tracker@broker", "is a placeholder"),
        ("TRACKER_DATABASE_URL", "postgresql+psycopg://bob:CHANGEME@db/x", "is a placeholder"),
    ],
)
def test_the_server_refuses_to_start_with_one_line_and_no_traceback(
    variable: str, value: str, message: str
) -> None:
    env = {**os.environ, variable: value}

    result = subprocess.run(
        [sys.executable, "-m", "tracker_api"], env=env, capture_output=True, text=True, timeout=30
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tracker-api: invalid configuration:")
    assert variable in lines[0]
    assert message in lines[0]
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://bob:pw@db/x", "postgresql://bob:***@db/x"),
        ("mqtts://:pw@h", "mqtts://:***@h"),
        ("'sqlite://u:p@ss/w@rd@h/x' and mqtt://a:b@c", "'sqlite://u:***@h/x' and mqtt://a:***@c"),
        ("mqtt://user@host:1883", "mqtt://user@host:1883"),
    ],
)
def test_redact_hides_every_url_password(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("password", "placeholder"),
    [("change-me", True), ("Change-Me-postgres", True), ("changeme1", True)]
    + [("s3cret-change-me", False), ("chan", False), ("", False)],
)
def test_a_placeholder_is_a_password_that_begins_like_the_examples(
    password: str, placeholder: bool
) -> None:
    from tracker_api.passwords import is_placeholder

    assert is_placeholder(password) is placeholder


def test_config_errors_are_redacted_wherever_they_are_raised() -> None:
    error = ConfigError(f"cannot connect to\npostgresql://bob:{SECRET}@db/x")

    assert str(error) == "cannot connect to postgresql://bob:***@db/x"


def test_the_trackers_client_ids_start_with_its_login() -> None:
    settings = load_settings(mqtt_url="mqtt://svc:pw@127.0.0.1:1883")
    assert settings.worker_client_id_prefix == "svc:api"
    assert (settings.ingest_session, settings.archive_session) == ("svc:ingest", "svc:archive")
    anonymous = load_settings(mqtt_url="mqtt://127.0.0.1:1883")
    assert anonymous.archive_session == "tracker:archive"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("archive_client_id", "tracker:archive"),
        ("ingest_client_id", "svc-ingest"),
        ("client_id", "other:api"),
        ("client_id_prefix", "svcx"),
    ],
)
def test_an_id_the_login_may_not_use_stops_the_tracker_with_one_line(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(mqtt_url="mqtt://svc:pw@127.0.0.1:1883", **{variable: value})
    message = str(refused.value)
    assert f"TRACKER_{variable.upper()}: login 'svc' may not use it" in message
    assert "<login>:" in message and "\n" not in message
