"""Turn events into output: plain lines, coloured lines, JSON lines, templates, tables.

Renderers return bytes ready for stdout; the caller batches them and flushes once per
batch, before acknowledging the batch. Nothing here does I/O.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from subscriber.aggregate import AccountRow, Snapshot

Event = dict[str, Any]
RAW_PREVIEW = 200
EVENT_FIELDS = ("eventId", "accountId", "timestamp", "data", "deviceTime", "requestId", "traceId")
"""What an event may carry: the tracker's four fields, then the optional ones."""
EXTRA_FIELDS = ("topic", "receivedAt", "lag")
"""What mqtt-tail adds for ``--format``: where and when the event arrived."""
TEMPLATE_FIELDS = EVENT_FIELDS + EXTRA_FIELDS


def parse_event(payload: bytes | bytearray) -> Event | None:
    """The event in ``payload``, or None when it is not our JSON (no string eventId)."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(event) is dict and type(event.get("eventId")) is str:
        return event
    return None


@lru_cache(maxsize=4096)
def _epoch(timestamp: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def lag_of(event: Event, now: float) -> float | None:
    """Seconds between the event's timestamp and ``now``; None without a valid timestamp."""
    timestamp = event.get("timestamp")
    if type(timestamp) is not str:
        return None
    epoch = _epoch(timestamp)
    return None if epoch is None else now - epoch


def format_lag(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f}s"
    if seconds < 3600:
        return f"{sign}{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{sign}{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def counted(count: int, noun: str) -> str:
    """``1 event``, ``2 events``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_line(shown: int, duplicates: int, malformed: int) -> str:
    """What a run did, for its last line on stderr."""
    not_events = "was not an event" if malformed == 1 else "were not events"
    return (
        f"{counted(shown, 'event')} shown, {counted(duplicates, 'duplicate')} dropped, "
        f"{counted(malformed, 'payload')} {not_events}"
    )


def iso_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, like the tracker's timestamps."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def printable(value: object) -> str:
    """Text safe for a terminal: control characters (escape sequences) are escaped."""
    text = value if type(value) is str else orjson.dumps(value).decode()
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


_UNSAFE_FOR_JSON = re.compile("[^\x00-\x7e]+")
"""What orjson leaves unescaped and may not be printable: DEL and non-ASCII."""


def json_for_terminal(data: bytes) -> bytes:
    """JSON lines with every character ``printable`` would escape written as ``\\uXXXX``:
    still the same JSON, but a terminal never sees C1 controls (U+009B is CSI) or bidi
    overrides (U+202E). orjson itself escapes only C0 controls."""
    if data.isascii() and b"\x7f" not in data:
        return data
    return _UNSAFE_FOR_JSON.sub(_escape_unprintable, data.decode()).encode()


def _escape_unprintable(match: re.Match[str]) -> str:
    return "".join(char if char.isprintable() else _json_escape(char) for char in match[0])


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # astral planes: a UTF-16 surrogate pair, as JSON spells them
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def raw_preview(payload: bytes | bytearray) -> str:
    text = printable(payload[:RAW_PREVIEW].decode("utf-8", errors="replace"))
    if len(payload) > RAW_PREVIEW:
        text += f"... ({len(payload)} bytes)"
    return text or "(empty payload)"


def _clock(event: Event) -> str:
    """The time of day of the event's timestamp, escaped like every field: the archive's
    answer and a publisher on ``track/#`` are data, whatever shape they take."""
    timestamp = event.get("timestamp")
    if type(timestamp) is str and len(timestamp) >= 23 and timestamp[10] == "T":
        return printable(timestamp[11:23])
    return printable(timestamp) if timestamp is not None else "-"


class Renderer(Protocol):
    def event(self, event: Event, topic: str, received: float) -> bytes: ...

    def raw(self, topic: str, payload: bytes | bytearray, received: float) -> bytes | None:
        """A payload that is not our JSON; None skips it (the caller warns)."""


class PlainRenderer:
    """One line per event: time, account, data, lag. For pipes and files."""

    def event(self, event: Event, topic: str, received: float) -> bytes:
        account = printable(event.get("accountId", topic.rpartition("/")[2]))
        data = printable(event.get("data", ""))
        lag = format_lag(lag_of(event, received))
        return f"{_clock(event)}  {account:<6}  {data}  {lag}\n".encode()

    def raw(self, topic: str, payload: bytes | bytearray, received: float) -> bytes | None:
        clock = iso_time(received)[11:23]
        return f"{clock}  {printable(topic)}  RAW {raw_preview(payload)}\n".encode()


class ColourRenderer:
    """The plain line, coloured with rich, for a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _ansi(self, text: Text) -> bytes:
        with self.console.capture() as capture:
            self.console.print(text, no_wrap=True, overflow="ellipsis", crop=True)
        return capture.get().encode()

    def event(self, event: Event, topic: str, received: float) -> bytes:
        lag = lag_of(event, received)
        lag_style = "green" if lag is None or lag < 1 else "yellow" if lag < 10 else "red"
        text = Text.assemble(
            (_clock(event), "dim"),
            "  ",
            (f"{printable(event.get('accountId', topic.rpartition('/')[2])):<6}", "bold cyan"),
            "  ",
            printable(event.get("data", "")),
            "  ",
            (format_lag(lag), lag_style),
        )
        return self._ansi(text)

    def raw(self, topic: str, payload: bytes | bytearray, received: float) -> bytes | None:
        text = Text.assemble(
            (iso_time(received)[11:23], "dim"),
            "  ",
            (printable(topic), "bold cyan"),
            "  ",
            ("RAW", "bold magenta"),
            " ",
            raw_preview(payload),
        )
        return self._ansi(text)


class JsonRenderer:
    """One JSON object per line: the event's fields plus ``receivedAt``, for jq."""

    def __init__(self) -> None:
        self._ms = -1
        self._iso = ""

    def received_at(self, received: float) -> str:
        ms = int(received * 1000)
        if ms != self._ms:
            self._ms = ms
            self._iso = iso_time(received)
        return self._iso

    def event(self, event: Event, topic: str, received: float) -> bytes:
        shown = {**event, "receivedAt": self.received_at(received)}
        return orjson.dumps(shown, option=orjson.OPT_APPEND_NEWLINE)

    def raw(self, topic: str, payload: bytes | bytearray, received: float) -> bytes | None:
        return None


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""  # an optional field this event does not carry (requestId, ...)


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a ``--format``, or None when it can. A name that is no
    field would print nothing, event after event: refused at start with the valid ones."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:  # "{data", "}"
        return f"{error} in {template!r}"
    valid = ", ".join(f"{{{field}}}" for field in TEMPLATE_FIELDS)
    for name in names:
        if name not in TEMPLATE_FIELDS:
            return f"unknown field {{{name}}}; the fields are {valid}"
    return None


class TemplateRenderer:
    """``--format``: a str.format template over the event's fields, e.g. ``{eventId} {data}``.

    The names are ``TEMPLATE_FIELDS``: the event's own and ``topic``, ``receivedAt``,
    ``lag``; an optional field the event does not carry renders empty.
    """

    def __init__(self, template: str) -> None:
        self.template = template.replace("\\t", "\t").replace("\\n", "\n")
        self._json = JsonRenderer()
        # Fail at start with a clear message rather than on the first event.
        problem = template_problem(self.template)
        if problem is not None:
            raise ValueError(problem)
        self.event({"eventId": "x"}, "track/x", 0.0)

    def event(self, event: Event, topic: str, received: float) -> bytes:
        fields = _Fields({key: printable(value) for key, value in event.items()})
        # A replayed event's topic is made of its accountId: escaped as the fields are.
        fields["topic"] = printable(topic)
        fields["receivedAt"] = self._json.received_at(received)
        fields["lag"] = format_lag(lag_of(event, received))
        return (self.template.format_map(fields) + "\n").encode()

    def raw(self, topic: str, payload: bytes | bytearray, received: float) -> bytes | None:
        return PlainRenderer().raw(topic, payload, received)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def snapshot_json(snapshot: Snapshot) -> bytes:
    document = {
        "type": snapshot.kind,
        "at": iso_time(snapshot.at),
        "seconds": round(snapshot.period, 3),
        "count": snapshot.count,
        "total": snapshot.total,
        "accounts": [
            {
                "accountId": row.account,
                "count": row.count,
                "total": row.total,
                "rate": round(row.rate, 1),
                "lagAvgMs": _ms(row.lag_avg),
                "lagMaxMs": _ms(row.lag_max),
            }
            for row in snapshot.rows
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)


IDLE = "-"
"""The lag of an account with no event in the period: there is nothing to measure
(``?`` is kept for events whose timestamp cannot be read)."""


def _lags(row: AccountRow) -> list[str]:
    if row.count == 0:
        return [IDLE, IDLE]
    return [format_lag(row.lag_avg), format_lag(row.lag_max)]


def _cells(snapshot: Snapshot) -> tuple[list[str], list[list[str]]]:
    headers = ["account", "count", "total", "rate/s", "lag avg", "lag max"]
    rows = [
        [printable(row.account), str(row.count), str(row.total), f"{row.rate:.1f}", *_lags(row)]
        for row in snapshot.rows
    ]
    return headers, rows


def snapshot_text(snapshot: Snapshot) -> bytes:
    """A plain table for pipes: a title line, a header, a line per account."""
    headers, rows = _cells(snapshot)
    title = (
        f"# {snapshot.kind} at {iso_time(snapshot.at)}: {counted(snapshot.count, 'event')} "
        f"in {snapshot.period:.1f}s, {snapshot.total} in total"
    )
    widths = [max(len(cells[i]) for cells in [headers, *rows]) for i in range(len(headers))]
    lines = [title] + [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in [headers, *rows]
    ]
    return ("\n".join(lines) + "\n").encode()


def snapshot_table(snapshot: Snapshot) -> Table:
    """The same numbers as a rich table, for a live display on a terminal."""
    headers, rows = _cells(snapshot)
    table = Table(
        title=f"{snapshot.kind}: {counted(snapshot.count, 'event')} in {snapshot.period:.1f}s, "
        f"{snapshot.total} in total",
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "account" else "right")
    for cells in rows:
        table.add_row(*cells)
    return table
