"""The ``mqtt-tail`` command: options, wiring, exit codes. The work is done elsewhere."""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, BinaryIO, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console

from tracker_api.ids import ACCOUNT_ID
from tracker_api.mqtt.nodes import parse_hosts

from .aggregate import Aggregator
from .dedup import DEFAULT_CAPACITY, Deduplicator
from .pipeline import LiveView, Output, Pipeline, TextView
from .render import (
    ColourRenderer,
    JsonRenderer,
    PlainRenderer,
    Renderer,
    TemplateRenderer,
    json_for_terminal,
)
from .session import ConnectOptions, Refused, Session

logger = logging.getLogger("subscriber")

EXIT_TIMEOUT = 3
EXIT_REFUSED = 4
LIVE_REFRESH = 1.0
"""Seconds between redraws of the --aggregate table on a terminal."""
F = TypeVar("F", bound=Callable[..., Any])


class RefusedError(click.ClickException):
    exit_code = EXIT_REFUSED


class HostType(click.ParamType[str, str]):
    """``host[:port]``; a comma-separated list in the environment variable."""

    name = "host[:port]"
    envvar_list_splitter = ","

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


HOST = HostType()


def connection_options(command: F) -> F:
    """Where the broker is and who we are."""
    for option in reversed(
        [
            click.option(
                "--host",
                "hosts",
                envvar="MQTT_TAIL_HOST",
                type=HOST,
                multiple=True,
                default=["127.0.0.1"],
                show_default=True,
                help="Broker host[:port]; repeat it for the nodes of a cluster (or list them "
                "comma-separated in MQTT_TAIL_HOST): on failure the next one is tried and "
                "the session resumes on whichever answers.",
            ),
            click.option(
                "--port",
                type=click.IntRange(1, 65535),
                help="Port of the hosts given without one  [default: 1883, 8883 with --tls]",
            ),
            click.option("--username", help="MQTT username."),
            click.option(
                "--password",
                help="MQTT password; prefer MQTT_TAIL_PASSWORD (shell history keeps commands).",
            ),
            click.option("--tls", is_flag=True, help="Connect with TLS."),
            click.option(
                "--cafile",
                type=click.Path(exists=True, dir_okay=False),
                help="CA certificate for TLS (implies --tls).",
            ),
            click.option(
                "--client-id",
                help="Session id; the broker keeps the session under it. "
                "Default: derived from user, host and accounts.",
            ),
            click.option(
                "--clean", is_flag=True, help="Discard the stored session and start fresh."
            ),
            click.option(
                "--keepalive",
                type=click.IntRange(1, 3600),
                default=5,
                show_default=True,
                help="Seconds; a silent connection is dropped within about twice this.",
            ),
            click.option(
                "--reconnect-min",
                type=click.FloatRange(0.01, 3600),
                default=0.5,
                show_default=True,
                help="First reconnection delay, seconds (doubles per failure, with jitter).",
            ),
            click.option(
                "--reconnect-max",
                type=click.FloatRange(0.01, 3600),
                default=30.0,
                show_default=True,
                help="Longest reconnection delay, seconds.",
            ),
        ]
    ):
        command = option(command)
    return command


def output_options(command: F) -> F:
    """What is shown and when the run ends."""
    for option in reversed(
        [
            click.option(
                "--account",
                "accounts",
                envvar="MQTT_TAIL_ACCOUNT",
                multiple=True,
                default=["+"],
                show_default=True,
                help="Account id to watch, repeatable; + watches all.",
            ),
            click.option(
                "--json",
                "as_json",
                envvar="MQTT_TAIL_JSON",
                is_flag=True,
                help="One JSON object per line.",
            ),
            click.option(
                "--format",
                "template",
                envvar="MQTT_TAIL_FORMAT",
                help="Line template, e.g. '{timestamp} {accountId} {data}'; also {eventId}, "
                "{topic}, {receivedAt}, {lag}.",
            ),
            click.option("--aggregate", is_flag=True, help="Per-account counts, rates and lags."),
            click.option(
                "--every",
                type=click.IntRange(min=1),
                default=500,
                show_default=True,
                help="With --aggregate: report every N events (on a terminal the table "
                "is redrawn every second unless this or --window is given).",
            ),
            click.option(
                "--window",
                type=click.FloatRange(min=0.01),
                help="With --aggregate: report every SECONDS instead.",
            ),
            click.option("--count", type=click.IntRange(min=1), help="Exit after N events."),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0.01),
                help=f"Exit with code {EXIT_TIMEOUT} when nothing arrives for SECONDS.",
            ),
            click.option(
                "--dedup-size",
                type=click.IntRange(min=1),
                default=DEFAULT_CAPACITY,
                show_default=True,
                help="How many recent (account, eventId) pairs are remembered to drop "
                "redeliveries.",
            ),
            click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr."),
        ]
    ):
        command = option(command)
    return command


@click.command(
    context_settings={"auto_envvar_prefix": "MQTT_TAIL", "help_option_names": ["-h", "--help"]},
    epilog=f"Exit codes: 0 done (Ctrl-C, SIGTERM, --count), 2 usage, {EXIT_TIMEOUT} --timeout, "
    f"{EXIT_REFUSED} refused by the broker (credentials, ACL). "
    "Every option can also be set as MQTT_TAIL_<OPTION>, e.g. MQTT_TAIL_PASSWORD.",
)
@connection_options
@output_options
def tail(
    *,
    hosts: tuple[str, ...],
    port: int | None,
    username: str | None,
    password: str | None,
    tls: bool,
    cafile: str | None,
    client_id: str | None,
    clean: bool,
    keepalive: int,
    reconnect_min: float,
    reconnect_max: float,
    accounts: tuple[str, ...],
    as_json: bool,
    template: str | None,
    aggregate: bool,
    every: int,
    window: float | None,
    count: int | None,
    timeout: float | None,
    dedup_size: int,
    quiet: bool,
) -> None:
    """Watch the tracker's events live: each acknowledged event shown exactly once,
    including those published while mqtt-tail was not running.

    \b
    Examples:
      mqtt-tail --account 42
      mqtt-tail --json | jq .data
      mqtt-tail --aggregate --window 5
      mqtt-tail --host 127.0.0.1:1884 --host 127.0.0.1:1885 --host 127.0.0.1:1886
    """
    with _stderr_logging(quiet=quiet):
        ctx = click.get_current_context()
        if ctx.get_parameter_source("password") == ParameterSource.COMMANDLINE:
            logger.warning(
                "--password on the command line lands in shell history; use MQTT_TAIL_PASSWORD"
            )
        watched = _accounts(accounts)
        if as_json and template:
            raise click.UsageError("--json and --format cannot be combined")
        if aggregate and template:
            raise click.UsageError("--format does not apply to --aggregate")
        if reconnect_max < reconnect_min:
            raise click.UsageError("--reconnect-max must not be below --reconnect-min")
        if not client_id:
            client_id = default_client_id(watched)
            logger.info("client id %s (set --client-id to choose one)", client_id)
        tls = tls or cafile is not None
        listed = ",".join(hosts)
        try:
            nodes = parse_hosts(listed, port or (8883 if tls else 1883))
        except ValueError as error:
            raise click.BadParameter(f"{listed!r} {error}", param_hint="--host") from None
        options = ConnectOptions(
            nodes=nodes,
            client_id=client_id,
            topics=[f"track/{account}" for account in watched],
            clean=clean,
            username=username,
            password=password,
            tls=tls,
            cafile=cafile,
            keepalive=keepalive,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
        )
        out = _stdout()
        terminal = out.isatty()
        # The other modes escape field by field; JSON must stay JSON, so it is escaped whole.
        output = Output(out, escape=json_for_terminal if terminal and as_json else None)
        console = Console(file=sys.stdout, force_terminal=terminal or None)
        if aggregate:
            live = terminal and not as_json
            pipeline = Pipeline(
                output,
                aggregator=_aggregator(every, window, live=live),
                view=LiveView(console) if live else TextView(output.write, json=as_json),
                dedup=Deduplicator(dedup_size),
                count=count,
                timeout=timeout,
            )
        else:
            pipeline = Pipeline(
                output,
                renderer=_renderer(as_json, template, terminal, console),
                dedup=Deduplicator(dedup_size),
                count=count,
                timeout=timeout,
            )
        status = run(Session(options, pipeline), pipeline)
    sys.exit(status)


def main() -> None:
    tail()


def run(session: Session, pipeline: Pipeline) -> int:
    """Until a signal, --count, --timeout or a closed pipe; the exit status."""
    refused: Refused | None = None
    with _stop_on_signals() as stopped:
        try:
            session.run(lambda: stopped() or pipeline.stop_reason is not None)
        except Refused as error:
            refused = error
        finally:
            # Refused at once, a summary of nothing would only bury the error.
            if refused is None or pipeline.shown or pipeline.duplicates or pipeline.malformed:
                pipeline.finish()
    if refused is not None:
        raise RefusedError(f"{refused}\n{refusal_hint(refused, session.options)}")
    if pipeline.stop_reason == "broken-pipe":
        _silence_stdout()
        return 0
    return EXIT_TIMEOUT if pipeline.stop_reason == "timeout" else 0


CREDENTIALS_HINT = "after `make run`, load its logins with: set -a; . var/credentials.env; set +a"


def refusal_hint(refused: Refused, options: ConnectOptions) -> str:
    """What to do about a refusal: the line after the error."""
    user = options.username
    if refused.kind == "login":
        if not user:
            return f"hint: no username given (MQTT_TAIL_USERNAME or --username); {CREDENTIALS_HINT}"
        if not options.password:
            return (
                f"hint: no password given for {user} (MQTT_TAIL_PASSWORD or --password); "
                f"{CREDENTIALS_HINT}"
            )
        return (
            f"hint: the broker does not accept {user} with this password "
            f"(MQTT_TAIL_USERNAME, MQTT_TAIL_PASSWORD); {CREDENTIALS_HINT}"
        )
    if refused.kind == "subscription":
        return (
            f"hint: {user or 'this login'} may not read {', '.join(options.topics)}; an "
            "account's login reads only its own account (--account <id>), the reader login all"
        )
    if refused.kind == "client-id":
        return "hint: choose another --client-id (letters and digits, at most 23 characters)"
    return "hint: use a broker that speaks MQTT 3.1.1 (Mosquitto does)"


def _aggregator(every: int, window: float | None, *, live: bool) -> Aggregator:
    """Pipes get a report every N events (--every) or SECONDS (--window); a person at a
    terminal gets a table that moves on time even when events are rare."""
    every_given = click.get_current_context().get_parameter_source("every") not in (
        ParameterSource.DEFAULT,
        ParameterSource.DEFAULT_MAP,
    )
    if live and window is None and not every_given:
        window = LIVE_REFRESH
    return Aggregator(every=every, window=window, now=time.time())


def _accounts(values: tuple[str, ...]) -> list[str]:
    accounts = sorted(set(values))
    if accounts == ["+"]:
        return accounts
    for account in accounts:
        if account != "+" and not ACCOUNT_ID.fullmatch(account):
            raise click.BadParameter(f"{account!r} is not an account id", param_hint="--account")
    return ["+"] if "+" in accounts else accounts


def default_client_id(accounts: list[str]) -> str:
    """Stable across runs for the same user, host and filters, so the session resumes."""
    digest = hashlib.sha256(" ".join(accounts).encode()).hexdigest()[:8]
    user = re.sub(r"[^A-Za-z0-9_.-]", "", getpass.getuser())[:16] or "user"
    host = re.sub(r"[^A-Za-z0-9_.-]", "", socket.gethostname().split(".")[0])[:16] or "host"
    return f"mqtt-tail-{user}-{host}-{digest}"


def _renderer(as_json: bool, template: str | None, terminal: bool, console: Console) -> Renderer:
    if as_json:
        return JsonRenderer()
    if template:
        try:
            return TemplateRenderer(template)
        except (ValueError, IndexError, KeyError) as error:
            raise click.BadParameter(str(error), param_hint="--format") from None
    if terminal:
        return ColourRenderer(console)
    return PlainRenderer()


def _stdout() -> BinaryIO:
    buffer = getattr(sys.stdout, "buffer", None)
    return buffer if buffer is not None else sys.stdout  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After a broken pipe, keep the interpreter's final flush from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Ctrl-C and SIGTERM end the run cleanly; a second one is not gentle any more."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _stderr_logging(*, quiet: bool) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mqtt-tail: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
