"""`tracker-api`: serve the API (the default), or manage accounts (`tracker-api accounts`)
and MQTT logins (`tracker-api users`)."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from tracker_api.config import ConfigError, Settings, get_settings
from tracker_api.consumers.archive import Archive
from tracker_api.consumers.lease import lease_for
from tracker_api.consumers.retire import RetireFailed, retire_member
from tracker_api.ops import local_credentials
from tracker_api.ops.accounts import NO_SUCH_ACCOUNT, accounts, check_login_account
from tracker_api.ops.broker_reload import COMPOSE_RELOAD, SYSTEM_RELOAD, apply_password_file
from tracker_api.ops.cluster_roles import cluster_users
from tracker_api.ops.login_options import CONTEXT, login_name, login_options, login_password
from tracker_api.passwords import PasswordFile
from tracker_api.service.client_ids import StateDirError, safe_directory
from tracker_api.storage.db import make_engine, migrate
from tracker_contract.roles import describe_role

logger = logging.getLogger("tracker_api")

HTTP_PROTOCOL = "tracker_api.http.protocol:BoundedHttpToolsProtocol"


def logging_config(level: str) -> dict[str, Any]:
    """One line per notable event: time, level, logger, process, message."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"}
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }


def serve() -> None:
    try:
        settings = get_settings()
        safe_directory(settings.state_dir)
    except StateDirError as error:
        sys.stderr.write(f"tracker-api: TRACKER_STATE_DIR: {error}\n")
        raise SystemExit(2) from None
    except ConfigError as error:
        sys.stderr.write(f"tracker-api: invalid configuration: {error}\n")
        raise SystemExit(2) from None
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers write their metrics here so /metrics on any worker shows the total.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tracker-metrics-")
    logger.info(
        "serving on http://%s:%s with %d worker(s)", settings.host, settings.port, settings.workers
    )
    uvicorn.run(
        "tracker_api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # httptools with the request head bounded (TRACKER_MAX_HEADER_BYTES): named by its
        # import path, which every worker process can load.
        http=HTTP_PROTOCOL,
        access_log=False,
        log_config=log_config,  # applied again in every worker process
        server_header=False,
        # The client address counts failed logins; only named proxies may say who the
        # client is (X-Forwarded-For). Without any, the TCP peer is the client.
        proxy_headers=bool(settings.forwarded_allow_ip_list),
        forwarded_allow_ips=settings.forwarded_allow_ip_list or None,
        lifespan="on",
    )


PASSWORD_FILE = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("var/mqtt/passwd"),
    envvar="MQTT_PASSWORD_FILE",
    show_default=True,
    show_envvar=True,
    help="Mosquitto password file to change.",
)


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Tracker API. Without a command, serve it (configured by TRACKER_* variables).

    \b
    tracker-api                         # serve on TRACKER_HOST:TRACKER_PORT
    tracker-api accounts add 42         # account 42 in TRACKER_DATABASE_URL
    tracker-api users add 42            # a login for account 42 (reader and device)
    tracker-api migrate                 # bring the database to the newest schema
    tracker-api archive                 # the event archive on its own
    """
    if ctx.invoked_subcommand is None:
        serve()


@cli.command("serve")
def serve_command() -> None:
    """Serve the API (the default)."""
    serve()


@cli.group(context_settings=CONTEXT)
def users() -> None:
    """Manage MQTT logins in Mosquitto's password file (roles come from mqtt/acl)."""


@users.command(
    "add",
    epilog="Exit codes: 0 added or updated, 1 error, 2 usage, "
    f"{NO_SUCH_ACCOUNT} no such account (--strict).",
)
@login_options
@PASSWORD_FILE
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse an account the database (TRACKER_DATABASE_URL) does not have, instead of warning.",
)
def users_add(
    username: str | None,
    password_file: Path,
    role: str | None,
    password: str | None,
    generate: bool,
    strict: bool,
) -> None:
    """Add a login or change its password: an account's (USERNAME = account id), or a
    role's (--role).

    \b
    --role tracker  publishes track/#, reads ingest/# and track/# (the service, its archive)
    --role reader   reads track/#                            (dashboards, mqtt-tail)
    <account>       reads track/<account>, publishes ingest/<account>

    An account's login is checked against the accounts of TRACKER_DATABASE_URL: without
    the account the tracker refuses its events, which a warning on stderr says (with
    --strict: refused, nothing written). Roles are no accounts: not checked.
    """
    username = login_name(username, role)
    if role is None:
        check_login_account(username, strict)
    password = login_password(password, generate)
    try:
        with PasswordFile.edit(password_file) as passwords:
            created = passwords.set(username, password)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'added' if created else 'updated'} {username} ({describe_role(username)})")
    if generate:
        click.echo(f"password: {password}")
    apply_to_broker(password_file)
    keep_credentials_in_step(password_file, username, password)


def keep_credentials_in_step(password_file: Path, username: str, password: str) -> None:
    """`make run`'s credentials.env beside the file holds this login's password too."""
    variable = local_credentials.update(password_file, username, password)
    if variable is None:
        return
    where = local_credentials.beside(password_file)
    click.echo(
        f"updated {variable} in {where}: load it again (set -a; . {where}; set +a)", err=True
    )
    if variable == local_credentials.TRACKER_URL:
        click.echo(
            "the running API keeps its broker connection; restart `make run` so that it "
            "logs in with the new password",
            err=True,
        )


@users.command("remove")
@click.argument("username")
@PASSWORD_FILE
def users_remove(username: str, password_file: Path) -> None:
    """Remove a login."""
    try:
        with PasswordFile.edit(password_file) as passwords:
            removed = passwords.remove(username)
    except OSError as error:
        raise click.ClickException(str(error)) from None
    if not removed:
        raise click.ClickException(f"no user {username!r} in {password_file}")
    click.echo(f"removed {username}")
    apply_to_broker(password_file)


def apply_to_broker(password_file: Path) -> None:
    """Mosquitto reads its password file only at start and on SIGHUP: signal exactly the
    brokers that use this file, or say what to run."""
    applied = apply_password_file(password_file)
    for pid in applied.reloaded:
        click.echo(f"the broker (pid {pid}) reloaded {password_file}", err=True)
    if applied.to_run:
        click.echo(f"the broker using {password_file} is not ours to signal; run:", err=True)
    elif not applied.reloaded:
        click.echo(
            f"no running Mosquitto is configured with {password_file} (a broker reads it "
            "when it starts); to reload one that reads it elsewhere, run:",
            err=True,
        )
        applied.to_run = [
            f"{SYSTEM_RELOAD}   (the system's service)",
            f"{COMPOSE_RELOAD}   (under docker compose)",
        ]
    for command in applied.to_run:
        click.echo(f"  {command}", err=True)


@users.command("list")
@PASSWORD_FILE
def users_list(password_file: Path) -> None:
    """List logins and what each may do."""
    for username in sorted(PasswordFile(password_file).entries):
        click.echo(f"{username:<20} {describe_role(username)}")


@cli.command("retire-member")
@click.argument("client_id")
@click.option(
    "--quiet",
    default=1.0,
    show_default=True,
    help="Seconds without a message after which the held ones are taken to be all.",
)
def retire_member_command(client_id: str, quiet: float) -> None:
    """Retire an ingest group member: republish the device messages its session holds,
    then end the session (after a scale-down, or a member id that changed).

    \b
    tracker-api retire-member tracker:api-myhost-2
    """
    settings = configured()
    logging.config.dictConfig(logging_config(settings.log_level))
    try:
        handled = asyncio.run(retire_member(settings, client_id, quiet))
    except RetireFailed as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"retired {client_id}: {handled} held message(s) republished or refused")


@cli.command("archive")
def archive_command() -> None:
    """Run the event archive on its own: consume track/# into the database while this
    process holds the archive lease (several may run; one consumes, the others wait).
    Needs TRACKER_ARCHIVE_* and the tracker's database and MQTT login.

    \b
    TRACKER_DATABASE_URL=postgresql+psycopg://db/tracker tracker-api archive
    """
    settings = configured()
    logging.config.dictConfig(logging_config(settings.log_level))
    try:
        asyncio.run(run_archive(settings))
    except KeyboardInterrupt:
        pass


async def run_archive(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    lease = lease_for(settings.database_url, settings.state_dir, settings.archive_session)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    try:
        async with Archive(settings, engine, lease, inline=True):  # its loop serves nothing else
            await stopped.wait()
    finally:
        engine.dispose()


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database (TRACKER_DATABASE_URL) to the newest schema; keeps its rows."""
    settings = configured()
    try:
        revision = migrate(settings.database_url)
    except SQLAlchemyError as error:
        raise click.ClickException(f"database error: {error}") from None
    click.echo(f"database at revision {revision}")


def configured() -> Settings:
    try:
        return get_settings()
    except ConfigError as error:
        raise click.ClickException(f"invalid configuration: {error}") from None


cli.add_command(accounts)
cli.add_command(cluster_users)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
