"""mqtt-tail's options, grouped as reusable decorators (sqlite-utils' ``output_options``)."""

from __future__ import annotations

from datetime import datetime

import click

from subscriber.dedup import DEFAULT_CAPACITY
from subscriber.render import TEMPLATE_FIELDS, template_problem
from tracker_contract.durations import InvalidTime, parse_time
from tracker_contract.option_group import option_group

EXIT_TIMEOUT = 3
EXIT_REFUSED = 4
EXIT_API = 5


class HostType(click.ParamType[str, str]):
    """``host[:port]``; a comma-separated list in the environment variable."""

    name = "host[:port]"
    envvar_list_splitter = ","

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return str(value)


HOST = HostType()


def check_template(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--format``: a template naming a field that does not exist is a usage error."""
    if value is not None:
        problem = template_problem(value)
        if problem is not None:
            raise click.BadParameter(problem, ctx, param)
    return value


# Where the broker is and who we are.
connection_options = option_group(
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
    click.option("--clean", is_flag=True, help="Discard the stored session and start fresh."),
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
)


# What is shown and when the run ends.
output_options = option_group(
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
        callback=check_template,
        help="Line template, e.g. '{timestamp} {accountId} {data}'. Fields: "
        + ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
        + " (an optional one the event lacks prints empty).",
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
        help="How many recent (account, eventId) pairs are remembered to drop redeliveries.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr."),
)


class SinceType(click.ParamType[datetime, str | datetime]):
    """``--since``: a duration back from now or an RFC 3339 time, parsed as the history
    API parses it."""

    name = "DURATION|RFC3339"

    def convert(
        self, value: str | datetime, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(value)
        except InvalidTime as error:
            self.fail(str(error), param, ctx)


class ApiType(click.ParamType[str, str]):
    name = "URL"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value.startswith(("http://", "https://")):
            self.fail(f"{value!r} is not an http:// or https:// URL", param, ctx)
        return value


# Where the archive is and how far back to replay.
history_options = option_group(
    click.option(
        "--since",
        type=SinceType(),
        help="Replay archived events from then (15m, 2h, 7d or an RFC 3339 time), "
        "then go live: no gap, no repeat.",
    ),
    click.option(
        "--api",
        type=ApiType(),
        help="The tracker serving the history (GET /events), e.g. http://127.0.0.1:9000; "
        "it gets the MQTT login, so there is no default (make run writes MQTT_TAIL_API "
        "in var/credentials.env). When given, a session the broker lost is refilled "
        "from it.",
    ),
    click.option(
        "--archive-wait",
        type=click.FloatRange(min=0),
        default=30.0,
        show_default=True,
        help="Seconds the replay waits for the archive to store what was acknowledged "
        "before the subscription (progress on stderr); past that it goes live and "
        "names the span it could not cover.",
    ),
    click.option(
        "--insecure-api",
        is_flag=True,
        help="Accept a plain http:// --api while the broker link is TLS: the login then "
        "crosses the network in clear.",
    ),
)
