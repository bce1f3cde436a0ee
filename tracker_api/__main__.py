"""`tracker-api`: serve the API (the default), or manage MQTT logins (`tracker-api users`)."""

from __future__ import annotations

import logging
import logging.config
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import uvicorn

from .config import ConfigError, get_settings
from .db import make_engine
from .errors import InvalidRequest
from .events import check_account_id
from .users import ROLES, PasswordFile, describe_role

logger = logging.getLogger("tracker_api")


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
        make_engine(settings.database_url).dispose()  # a bad URL or driver fails here
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
        http="httptools",
        access_log=False,
        log_config=log_config,  # applied again in every worker process
        server_header=False,
        proxy_headers=False,  # client addresses are not used; saves work per request
        lifespan="on",
    )


CONTEXT = {"help_option_names": ["-h", "--help"]}
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
    tracker-api users add 42            # a login for account 42 (reader and device)
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


@users.command("add")
@click.argument("username", required=False)
@PASSWORD_FILE
@click.option(
    "--role",
    type=click.Choice(sorted(ROLES)),
    help="Add the login of this role (named after it) instead of an account's.",
)
@click.option(
    "--password",
    envvar="MQTT_USER_PASSWORD",
    show_envvar=True,
    help="The password; prompted for when not given, generated with --generate.",
)
@click.option("--generate", is_flag=True, help="Generate a random password and print it once.")
def users_add(
    username: str | None,
    password_file: Path,
    role: str | None,
    password: str | None,
    generate: bool,
) -> None:
    """Add a login or change its password: an account's (USERNAME = account id), or a
    role's (--role).

    \b
    --role tracker  publishes track/#, reads ingest/#  (the service)
    --role reader   reads track/#                      (dashboards, mqtt-tail)
    <account>       reads track/<account>, publishes ingest/<account>
    """
    if role is not None:
        if username not in (None, role):
            raise click.UsageError(f"the login of role {role} is named {role}, not {username}")
        username = role
    elif username is None:
        raise click.UsageError("give an account id, or --role tracker|reader")
    else:
        try:
            check_account_id(username)
        except InvalidRequest as error:
            hint = f"; for the role's login: --role {username}" if username in ROLES else ""
            raise click.ClickException(f"{error.detail}{hint}") from None
    if generate:
        password = secrets.token_urlsafe(18)
    elif password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with PasswordFile.edit(password_file) as passwords:
            created = passwords.set(username, password or "")
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'added' if created else 'updated'} {username} ({describe_role(username)})")
    if generate:
        click.echo(f"password: {password}")
    click.echo(
        f"reload the broker to apply: kill -HUP <mosquitto pid>  ({password_file})", err=True
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


@users.command("list")
@PASSWORD_FILE
def users_list(password_file: Path) -> None:
    """List logins and what each may do."""
    for username in sorted(PasswordFile(password_file).entries):
        click.echo(f"{username:<20} {describe_role(username)}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
