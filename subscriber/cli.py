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
from datetime import datetime
from functools import partial
from types import FrameType
from typing import BinaryIO

import click
from click.core import ParameterSource
from rich.console import Console

from subscriber.aggregate import Aggregator
from subscriber.dedup import Deduplicator
from subscriber.options import (
    EXIT_API,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    connection_options,
    history_options,
    output_options,
)
from subscriber.pipeline import LiveView, Output, Pipeline, TextView
from subscriber.render import (
    ColourRenderer,
    JsonRenderer,
    PlainRenderer,
    Renderer,
    TemplateRenderer,
    json_for_terminal,
)
from subscriber.replay import ApiError, History, Replayer
from subscriber.session import ConnectOptions, Refused, Session
from tracker_contract import topics
from tracker_contract.ids import ACCOUNT_ID, CLIENT_ID_OWNERSHIP, client_id_allowed, client_id_for
from tracker_contract.nodes import parse_hosts

logger = logging.getLogger("subscriber")

LIVE_REFRESH = 1.0
"""Seconds between redraws of the --aggregate table on a terminal."""


class RefusedError(click.ClickException):
    exit_code = EXIT_REFUSED


class ApiFailed(click.ClickException):
    exit_code = EXIT_API


@click.command(
    context_settings={"auto_envvar_prefix": "MQTT_TAIL", "help_option_names": ["-h", "--help"]},
    epilog=f"Exit codes: 0 done (Ctrl-C, SIGTERM, --count), 2 usage, {EXIT_TIMEOUT} --timeout, "
    f"{EXIT_REFUSED} refused by the broker or the history API (credentials, ACL), "
    f"{EXIT_API} history API unreachable or failing (--since). "
    "Every option can also be set as MQTT_TAIL_<OPTION>, e.g. MQTT_TAIL_PASSWORD.",
)
@connection_options
@output_options
@history_options
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
    since: datetime | None,
    api: str | None,
    archive_wait: float,
    insecure_api: bool,
) -> None:
    """Watch the tracker's events live: each acknowledged event shown exactly once,
    including those published while mqtt-tail was not running.

    \b
    Examples:
      mqtt-tail --account 42
      mqtt-tail --json | jq .data
      mqtt-tail --aggregate --window 5
      mqtt-tail --since 10m --account 42
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
            client_id = default_client_id(watched, username)
            logger.info("client id %s (set --client-id to choose one)", client_id)
        elif not client_id_allowed(username, client_id):
            raise click.BadParameter(
                f"login {username!r} may not use {client_id!r}: {CLIENT_ID_OWNERSHIP}, "
                f"e.g. {client_id_for(username, 'tail-2')}",
                param_hint="--client-id",
            )
        tls = tls or cafile is not None
        check_api(api, since=since, tls=tls, insecure=insecure_api)
        listed = ",".join(hosts)
        try:
            nodes = parse_hosts(listed, port or (8883 if tls else 1883))
        except ValueError as error:
            raise click.BadParameter(f"{listed!r} {error}", param_hint="--host") from None
        options = ConnectOptions(
            nodes=nodes,
            client_id=client_id,
            topics=[topics.EVERY_ACCOUNT if a == "+" else topics.track(a) for a in watched],
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
        common = partial(
            Pipeline, output, dedup=Deduplicator(dedup_size), count=count, timeout=timeout
        )
        if aggregate:
            live = terminal and not as_json
            pipeline = common(
                aggregator=_aggregator(every, window, live=live),
                view=LiveView(console) if live else TextView(output.write, json=as_json),
            )
        else:
            pipeline = common(renderer=_renderer(as_json, template, terminal, console))
        replayer = None
        # The archive is asked only when named: the login never goes to an address the
        # user did not give (there is no default one to listen on and collect it).
        if api is not None:
            history = History(api, watched, username, password)
            replayer = Replayer(
                pipeline, history, since, terminal=sys.stderr.isatty(), archive_wait=archive_wait
            )
        status = run(Session(options, pipeline, replayer), pipeline)
    sys.exit(status)


def main() -> None:
    tail()


def check_api(api: str | None, *, since: datetime | None, tls: bool, insecure: bool) -> None:
    """The history API gets the MQTT login: only one the user named, and not over plain
    HTTP when the broker link is TLS, unless asked for (``--insecure-api``)."""
    if since is not None and api is None:
        raise click.UsageError(
            "--since needs --api: the tracker serving GET /events, which gets the MQTT login "
            "(e.g. --api http://127.0.0.1:9000, or MQTT_TAIL_API; make run writes it in "
            "var/credentials.env)"
        )
    if api is not None and tls and api.startswith("http://") and not insecure:
        raise click.UsageError(
            f"--api {api} is plain HTTP while the broker link is TLS: the login would cross "
            "the network in clear; use an https:// URL, or --insecure-api to accept that"
        )


def run(session: Session, pipeline: Pipeline) -> int:
    """Until a signal, --count, --timeout or a closed pipe; the exit status."""
    failed: Refused | ApiError | None = None
    with _stop_on_signals() as stopped:
        try:
            session.run(lambda: stopped() or pipeline.stop_reason is not None)
        except (Refused, ApiError) as error:
            failed = error
        finally:
            # Refused at once, a summary of nothing would only bury the error.
            if failed is None or pipeline.shown or pipeline.duplicates or pipeline.malformed:
                pipeline.finish()
    if isinstance(failed, Refused):
        raise RefusedError(f"{failed}\n{refusal_hint(failed, session.options)}")
    if isinstance(failed, ApiError):
        if failed.status in (401, 403):
            raise RefusedError(f"{failed}\n{history_hint(failed.status, session.options)}")
        raise ApiFailed(f"{failed}\nhint: start the tracker (make run) or point --api at it")
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
            f"(MQTT_TAIL_USERNAME, MQTT_TAIL_PASSWORD), or not as client id "
            f"{options.client_id} ({CLIENT_ID_OWNERSHIP}); {CREDENTIALS_HINT}"
        )
    if refused.kind == "subscription":
        return (
            f"hint: {user or 'this login'} may not read {', '.join(options.topics)}; an "
            "account's login reads only its own account (--account <id>), the reader login all"
        )
    if refused.kind == "client-id":
        return "hint: choose another --client-id (letters and digits, at most 23 characters)"
    if refused.kind == "taken-over":
        return (
            "hint: to run two mqtt-tail at once, give each its own session: "
            f"--client-id {client_id_for(user, 'second')} (each gets every event)"
        )
    return "hint: use a broker that speaks MQTT 3.1.1 (Mosquitto does)"


def history_hint(status: int, options: ConnectOptions) -> str:
    """The line after a refusal of the history API, which takes the MQTT login."""
    user = options.username
    if status == 401:
        return (
            "hint: the history API takes the MQTT login (MQTT_TAIL_USERNAME, "
            f"MQTT_TAIL_PASSWORD); {CREDENTIALS_HINT}"
        )
    return (
        f"hint: {user or 'this login'} may not read the history of "
        f"{', '.join(options.topics)}; an account's login reads only its own account "
        "(--account <id>), the reader login all"
    )


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


def default_client_id(accounts: list[str], login: str | None = None) -> str:
    """Stable across runs for the same login, user, host and filters, so the session
    resumes; it starts with the login, as the broker requires (docs/adr/0016)."""
    digest = hashlib.sha256(" ".join(accounts).encode()).hexdigest()[:8]
    user = re.sub(r"[^A-Za-z0-9_.-]", "", getpass.getuser())[:16] or "user"
    host = re.sub(r"[^A-Za-z0-9_.-]", "", socket.gethostname().split(".")[0])[:16] or "host"
    return client_id_for(login, f"mqtt-tail-{user}-{host}-{digest}")


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
