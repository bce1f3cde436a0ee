"""What the two login commands share: `tracker-api users` (Mosquitto's password file) and
`tracker-api cluster-users` (the RabbitMQ cluster) name a login and set its password by
the same rules."""

from __future__ import annotations

import secrets

import click

from tracker_api.errors import InvalidRequest
from tracker_api.service.validation import check_account_id
from tracker_contract.option_group import option_group
from tracker_contract.roles import ROLES

CONTEXT = {"help_option_names": ["-h", "--help"]}


# USERNAME (an account id) or --role, and --password or --generate.
login_options = option_group(
    click.argument("username", required=False),
    click.option(
        "--role",
        type=click.Choice(sorted(ROLES)),
        help="Add the login of this role (named after it) instead of an account's.",
    ),
    click.option(
        "--password",
        envvar="MQTT_USER_PASSWORD",
        show_envvar=True,
        help="The password; prompted for when not given, generated with --generate.",
    ),
    click.option("--generate", is_flag=True, help="Generate a random password and print it once."),
)


def login_name(username: str | None, role: str | None) -> str:
    """The login's name: the role's, or a valid account id (never a role's name)."""
    if role is not None:
        if username not in (None, role):
            raise click.UsageError(f"the login of role {role} is named {role}, not {username}")
        return role
    if username is None:
        raise click.UsageError("give an account id, or --role tracker|reader")
    try:
        check_account_id(username)
    except InvalidRequest as error:
        hint = f"; for the role's login: --role {username}" if username in ROLES else ""
        raise click.ClickException(f"{error.detail}{hint}") from None
    return username


def login_password(password: str | None, generate: bool) -> str:
    """The password given, a generated one, or one typed twice at the prompt."""
    if generate:
        return secrets.token_urlsafe(18)
    if password is None:
        password = str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    if not password:
        raise click.ClickException("the password must not be empty")
    return password
