"""Configuration from the environment (``TRACKER_*``, a ``.env`` file allowed).

``load_settings`` is the one way in: it validates everything and turns any failure into a
``ConfigError`` whose message is one line naming the variable, with credentials redacted
(a URL's ``user:password@`` becomes ``user:***@``). Messages never quote a URL field's
value; a field that is a secret as a whole must be typed ``SecretStr``, which pydantic
never prints.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from tracker_api.mqtt import BrokerAddress
from tracker_api.passwords import is_placeholder
from tracker_contract.durations import parse_duration
from tracker_contract.ids import (
    CLIENT_ID_OWNERSHIP,
    CLIENT_ID_PATTERN,
    client_id_allowed,
    client_id_for,
)
from tracker_contract.nodes import parse_hosts

ENV_PREFIX = "TRACKER_"
# "scheme://user:password@": the password runs to the last "@" of the URL, since an
# unencoded "@" or "/" in it is a common mistake and must not leak its tail.
URL_CREDENTIALS = re.compile(r"(://[^\s:/@'\"]*):[^\s'\"]*@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return URL_CREDENTIALS.sub(r"\1:***@", text)


def retention(value: object) -> object:
    """``7d`` and the like, as ``mqtt-tail --since`` and the history API read them."""
    if isinstance(value, str):
        span = parse_duration(value)
        if not span:
            raise ValueError("must be longer than 0s")
        return span
    return value


DATABASE_EXAMPLE = "e.g. postgresql+psycopg://host/db or sqlite:///var/tracker.db"


def check_database_url(text: str) -> URL:
    """The SQLAlchemy URL ``TRACKER_DATABASE_URL`` names, for a database whose dialect is
    installed; ``ValueError`` saying which of the two it is not. The one check: Settings
    runs it at load, ``db.make_engine`` on any URL it is given. Messages never quote the
    URL (it may hold a password)."""
    if "://" not in text:
        raise ValueError(f"TRACKER_DATABASE_URL is not a URL (expected {DATABASE_EXAMPLE})")
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(
            f"TRACKER_DATABASE_URL is not a valid URL (expected {DATABASE_EXAMPLE})"
        ) from None
    try:
        url.get_dialect()
    except (NoSuchModuleError, ImportError):
        raise ValueError(f"TRACKER_DATABASE_URL: unsupported database {url.drivername!r}") from None
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = Field(
        "sqlite:///var/tracker.db", description="SQLAlchemy URL of the accounts database"
    )
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="mqtt:// or mqtts://, optional user:password@; the nodes of one cluster "
        "as a list of hosts: mqtt://user:password@h1:1884,h2:1885",
    )
    mqtt_cafile: Path | None = Field(None, description="CA bundle for mqtts://")
    mqtt_keepalive: int = Field(15, ge=2, le=3600)
    client_id_prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:-]{1,40}$",
        description="workers connect as <prefix>-<host>-<slot>; default <login>:api",
    )
    client_id: str | None = Field(
        None,
        pattern=CLIENT_ID_PATTERN,
        description="fixed MQTT client id (one worker only); default <prefix>-<host>-<slot>",
    )
    state_dir: Path = Field(
        Path("var"), description="private state (client id slots); created 0700, must be ours"
    )
    host: str = "127.0.0.1"
    port: int = Field(9000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    max_data_bytes: int = Field(4096, ge=1, le=1_000_000)
    publish_timeout: float = Field(1.0, gt=0, le=60, description="seconds to wait for PUBACK")
    max_inflight: int = Field(10_000, ge=1, le=60_000)
    account_cache_ttl: float = Field(5.0, ge=0, le=3600)
    account_cache_size: int = Field(100_000, ge=1)
    ingest: bool = Field(True, description="consume device events from ingest/<accountId>")
    ingest_mode: Literal["shared", "leader"] = Field(
        "shared",
        description="shared: $share/tracker/ingest/+ on every tracker (Mosquitto, or another "
        "broker with shared subscriptions); leader: one elected tracker consumes ingest/+ "
        "(any broker, RabbitMQ 3.10)",
    )
    ingest_client_id: str | None = Field(
        None,
        pattern=CLIENT_ID_PATTERN,
        description="leader mode: the one cluster-wide client id of the ingest session; "
        "default <login>:ingest",
    )
    fast_path: bool = Field(True, description="serve the event routes with the lean ASGI path")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http_auth: bool = Field(
        False, description="event requests need HTTP Basic with a login of TRACKER_PASSWORD_FILE"
    )
    password_file: Path | None = Field(
        None, description="the Mosquitto password file HTTP logins are checked against"
    )
    http_auth_cache_ttl: float = Field(
        5.0, ge=0, le=3600, description="seconds a verified HTTP login is trusted without a check"
    )
    login_failures_per_login: float = Field(
        10,
        ge=0,
        description="failed HTTP logins per minute per login name, a burst of as many (0 = off)",
    )
    login_failures_per_address: float = Field(
        100,
        ge=0,
        description="failed HTTP logins per minute per client address, a burst of as many "
        "(0 = off)",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="comma-separated proxy addresses whose X-Forwarded-For names the client "
        "(none by default: the client is the TCP peer)",
    )
    max_header_bytes: int = Field(
        16_384,
        ge=1024,
        le=1_048_576,
        description="request header fields (names and values) in bytes; 431 beyond",
    )
    rate_limit: float = Field(
        0, ge=0, description="events per second per account, over all workers (0 = off)"
    )
    max_batch: int = Field(1000, ge=1, le=100_000, description="most events in one POST")
    archive: bool = Field(True, description="keep every event in the database (history, replay)")
    archive_retention: Annotated[timedelta, BeforeValidator(retention)] = Field(
        timedelta(days=7), description="how long archived events are kept, e.g. 7d, 12h"
    )
    history_readers: int = Field(
        2,
        ge=1,
        le=64,
        description="history reads served at once per worker, each on a thread and database "
        "connection of its own (more wait their turn)",
    )
    archive_client_id: str | None = Field(
        None,
        pattern=CLIENT_ID_PATTERN,
        description="the one MQTT client id (persistent session) the archive consumes as; "
        "default <login>:archive",
    )
    cors_origins: str = Field(
        "", description="comma-separated origins browsers may send events from (* = any)"
    )
    history_cors_origins: str = Field(
        "", description="comma-separated origins browsers may read the history from (never *)"
    )

    @model_validator(mode="after")
    def _check_urls(self) -> Settings:
        self.brokers  # noqa: B018 - parse now so a bad URL fails at start
        if self.client_id and self.workers > 1:
            raise ValueError("TRACKER_CLIENT_ID needs TRACKER_WORKERS=1: client ids must be unique")
        database = check_database_url(self.database_url)
        self._check_placeholders(database)
        self._check_client_ids()
        if self.http_auth and self.password_file is None:
            raise ValueError("TRACKER_HTTP_AUTH=true needs TRACKER_PASSWORD_FILE")
        if self.http_auth and self.password_file is not None and not self.password_file.is_file():
            # Every login would be refused: say so now, not as 401s to every device.
            raise ValueError(f"TRACKER_PASSWORD_FILE: no such file: {self.password_file}")
        if "*" in self.history_cors_origin_list:
            # Any web page could then read every account's events when the history is
            # open (no password file): name the dashboards instead.
            raise ValueError(
                "TRACKER_HISTORY_CORS_ORIGINS: * is refused; name the origins that may read "
                "the history, e.g. https://dashboard.example"
            )
        return self

    def _check_placeholders(self, database: URL) -> None:
        """A password copied unedited from an example (``change-me…``) is refused at start:
        it would work, and whoever read the example knows it."""
        found = {
            "TRACKER_MQTT_URL": self.broker.password,
            "TRACKER_DATABASE_URL": database.password,
        }
        for name, password in found.items():
            if password and is_placeholder(str(password)):
                raise ValueError(
                    f"{name}: the password is a placeholder (change-me...): set a real one"
                )

    def _check_client_ids(self) -> None:
        """Every id must be one the broker lets the login use (docs/adr/0016): say so at
        start, not as a refused CONNECT in a retry loop."""
        login = self.broker.username
        explicit = {
            "TRACKER_CLIENT_ID": self.client_id,
            "TRACKER_CLIENT_ID_PREFIX": self.client_id_prefix and f"{self.client_id_prefix}-x",
            "TRACKER_INGEST_CLIENT_ID": self.ingest_client_id,
            "TRACKER_ARCHIVE_CLIENT_ID": self.archive_client_id,
        }
        for name, client_id in explicit.items():
            if client_id and not client_id_allowed(login, client_id):
                raise ValueError(
                    f"{name}: login {login!r} may not use it ({CLIENT_ID_OWNERSHIP}); "
                    "the broker would refuse the connection"
                )

    @property
    def client_id_owner(self) -> str:
        """What this tracker's client ids start with: its MQTT login (``tracker`` when the
        broker is anonymous), so the broker lets it resume its own sessions only."""
        return self.broker.username or "tracker"

    @property
    def worker_client_id_prefix(self) -> str:
        return self.client_id_prefix or client_id_for(self.client_id_owner, "api")

    @property
    def ingest_session(self) -> str:
        """The client id of the ingest session (leader mode), also its lease's key."""
        return self.ingest_client_id or client_id_for(self.client_id_owner, "ingest")

    @property
    def archive_session(self) -> str:
        """The client id of the archive's session, also its lease's key."""
        return self.archive_client_id or client_id_for(self.client_id_owner, "archive")

    @property
    def cors_origin_list(self) -> list[str]:
        return _items(self.cors_origins)

    @property
    def history_cors_origin_list(self) -> list[str]:
        return _items(self.history_cors_origins)

    @property
    def forwarded_allow_ip_list(self) -> list[str]:
        return _items(self.forwarded_allow_ips)

    @property
    def brokers(self) -> tuple[BrokerAddress, ...]:
        """The broker, or the nodes of one cluster: one scheme and login for all of them,
        ``mqtt://user:password@h1:1884,h2:1885`` (a list of full URLs is refused)."""
        url = urlsplit(self.mqtt_url)
        if url.scheme not in ("mqtt", "mqtts"):
            raise ValueError(
                f"TRACKER_MQTT_URL must start with mqtt:// or mqtts://, got {url.scheme!r}"
            )
        if self.mqtt_url.count("://") > 1:
            raise ValueError(
                "TRACKER_MQTT_URL: list the nodes of a cluster as hosts of one URL, "
                "e.g. mqtt://h1:1884,h2:1885 with the login once, before the first host"
            )
        # The login ends at the last "@": a password may hold "," or "@" unencoded.
        login, _, hosts = url.netloc.rpartition("@")
        credentials = urlsplit(f"//{login}@host") if login else None
        tls = url.scheme == "mqtts"
        try:
            nodes = parse_hosts(hosts, 8883 if tls else 1883)
        except ValueError as error:
            raise ValueError(f"TRACKER_MQTT_URL {error}") from None
        return tuple(
            BrokerAddress(
                host=host,
                port=port,
                tls=tls,
                username=unquote(credentials.username)
                if credentials and credentials.username
                else None,
                password=unquote(credentials.password)
                if credentials and credentials.password
                else None,
                cafile=str(self.mqtt_cafile) if self.mqtt_cafile else None,
            )
            for host, port in nodes
        )

    @property
    def broker(self) -> BrokerAddress:
        """The first of ``brokers``, for tools that talk to one node."""
        return self.brokers[0]


def _items(text: str) -> list[str]:
    """The entries of a comma-separated setting, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class ConfigError(Exception):
    """Configuration that cannot work; the message is one readable line, redacted here so
    that no caller can print a password by mistake."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(" ".join(message.split())))


def describe(error: ValidationError, prefix: str = ENV_PREFIX) -> str:
    """One line naming each bad variable, e.g. ``TRACKER_PORT: must be <= 65535``."""
    parts = []
    for item in error.errors():
        name = prefix + "_".join(str(p) for p in item["loc"]).upper() if item["loc"] else ""
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {message}" if name else message)
    return "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and ``overrides``); ``ConfigError`` when invalid."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe(error)) from None
    except SettingsError as error:  # a value pydantic-settings could not even parse
        raise ConfigError(str(error)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
