import io

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from subscriber.aggregate import Aggregator
from subscriber.render import (
    TEMPLATE_FIELDS,
    ColourRenderer,
    JsonRenderer,
    PlainRenderer,
    TemplateRenderer,
    counted,
    format_lag,
    iso_time,
    json_for_terminal,
    lag_of,
    parse_event,
    printable,
    raw_preview,
    snapshot_json,
    snapshot_table,
    snapshot_text,
    summary_line,
    template_problem,
)

EVENT = {"eventId": "e1", "accountId": "42", "timestamp": "2026-11-28T12:00:00.123Z", "data": "hi"}
T0 = 1795867200.123  # 2026-11-28T12:00:00.123Z


def test_only_json_objects_with_a_string_event_id_are_events() -> None:
    assert parse_event(orjson.dumps(EVENT)) == EVENT
    for payload in (b"", b"nope", b"[1]", b'{"eventId": 1}', b"\xff", b"{}"):
        assert parse_event(payload) is None


def test_lag_is_measured_from_the_event_timestamp() -> None:
    assert iso_time(T0) == "2026-11-28T12:00:00.123Z"
    assert lag_of(EVENT, T0 + 0.5) == pytest.approx(0.5, abs=1e-3)
    assert lag_of({"timestamp": "yesterday"}, T0) is None
    assert lag_of({"timestamp": 5}, T0) is None
    assert lag_of({"timestamp": "2026-11-28T12:00:00"}, T0) == pytest.approx(0.123, abs=1e-3)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "?"),
        (0.035, "+35ms"),
        (-0.2, "-200ms"),
        (2.5, "+2.5s"),
        (125, "+2m05s"),
        (7300, "+2h01m"),
    ],
)
def test_lag_format(seconds: float | None, text: str) -> None:
    assert format_lag(seconds) == text


def test_control_characters_are_escaped_and_raw_payloads_previewed() -> None:
    assert printable("ok text") == "ok text"
    assert printable("a\x1b[2Jb\n") == "a\\x1b[2Jb\\n"
    assert printable({"k": 1}) == '{"k":1}'
    assert raw_preview(b"") == "(empty payload)"
    assert raw_preview(b"x" * 500).endswith("... (500 bytes)")


def test_plain_line_has_time_account_data_and_lag() -> None:
    line = PlainRenderer().event(dict(EVENT), "track/42", T0 + 0.035).decode()
    assert line == "12:00:00.123  42      hi  +35ms\n"
    assert b"RAW {bad" in PlainRenderer().raw("track/1", b"{bad", T0)


def test_plain_line_survives_missing_fields() -> None:
    line = PlainRenderer().event({"eventId": "x"}, "track/7", T0).decode()
    assert line.startswith("-  7 ")


def test_a_timestamp_and_a_topic_carrying_escape_sequences_are_printed_escaped() -> None:
    hostile = {**EVENT, "timestamp": "2026-11-28T\x1b[2J12:00:00.000Z"}
    topic = "track/1\x1b]0;owned\x07"

    plain = PlainRenderer().event(hostile, topic, T0).decode()
    templated = TemplateRenderer("{topic} {timestamp}").event(hostile, topic, T0).decode()

    assert "\x1b" not in plain and "\x07" not in plain
    assert plain.startswith("\\x1b[2J12:00:00  ")
    assert templated == "track/1\\x1b]0;owned\\x07 2026-11-28T\\x1b[2J12:00:00.000Z\n"


def test_json_line_is_the_event_plus_received_at() -> None:
    renderer = JsonRenderer()
    event = dict(EVENT)
    line = renderer.event(event, "track/42", T0)
    assert event == EVENT  # the caller's event is not changed
    assert line.endswith(b"\n")
    assert orjson.loads(line) == {**EVENT, "receivedAt": "2026-11-28T12:00:00.123Z"}
    assert renderer.raw("track/1", b"x", T0) is None


def test_template_fields_and_an_optional_field_the_event_lacks() -> None:
    renderer = TemplateRenderer("{accountId}\\t{data} {lag} {topic} {requestId}|")
    assert renderer.event(dict(EVENT), "track/42", T0 + 1).decode() == "42\thi +1.0s track/42 |\n"
    assert renderer.raw("track/1", b"x", T0) is not None
    with pytest.raises(ValueError):
        TemplateRenderer("{0}")
    with pytest.raises(ValueError):
        TemplateRenderer("{data")


@pytest.mark.parametrize("template", ["{nope}", "{data} {eventid}", "{data.x}", "{}"])
def test_a_template_naming_no_field_is_refused_with_the_valid_ones(template: str) -> None:
    problem = template_problem(template)

    assert problem is not None and problem.startswith("unknown field {")
    assert all(f"{{{name}}}" in problem for name in TEMPLATE_FIELDS)
    assert "{requestId}" in problem and "{traceId}" in problem
    with pytest.raises(ValueError, match="unknown field"):
        TemplateRenderer(template)


def test_every_template_field_renders() -> None:
    event = {**EVENT, "deviceTime": "2026-11-28T11:59:58Z", "requestId": "r-1", "traceId": "t"}
    line = TemplateRenderer(" ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS))

    rendered = line.event(event, "track/42", T0 + 1).decode().split()

    assert template_problem("{eventId} {lag}") is None
    assert rendered[4:] == [
        "2026-11-28T11:59:58Z",
        "r-1",
        "t",
        "track/42",
        iso_time(T0 + 1),
        "+1.0s",
    ]


def test_colour_line_on_a_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    renderer = ColourRenderer(console)
    for lag in (0.1, 5, 50):
        line = renderer.event(dict(EVENT), "track/42", T0 + lag).decode()
        assert "\x1b[" in line and "hi" in line and line.endswith("\n")
    assert b"RAW" in (renderer.raw("track/1", b"oops", T0) or b"")


def test_snapshots_as_json_text_and_table() -> None:
    agg = Aggregator(every=2, now=T0)
    agg.add("1", 0.25)
    agg.add("2", None)
    snap = agg.snapshot(T0 + 2)
    document = orjson.loads(snapshot_json(snap))
    assert document["type"] == "aggregate" and document["count"] == 2
    assert document["accounts"][0] == {
        "accountId": "1", "count": 1, "total": 1, "rate": 0.5, "lagAvgMs": 250.0, "lagMaxMs": 250.0,
    }  # fmt: skip
    assert document["accounts"][1]["lagAvgMs"] is None
    text = snapshot_text(snap).decode().splitlines()
    assert text[0].startswith("# aggregate at 2026-11-28T12:00:02.123Z: 2 events")
    assert text[1].split() == ["account", "count", "total", "rate/s", "lag", "avg", "lag", "max"]
    assert text[2].split() == ["1", "1", "1", "0.5", "+250ms", "+250ms"]
    assert snapshot_table(snap).row_count == 2


def test_an_idle_account_shows_a_dash_for_its_lags_and_an_unreadable_one_a_question_mark() -> None:
    agg = Aggregator(every=1, now=T0)
    agg.add("1", 0.25)
    agg.add("2", None)  # an event whose timestamp could not be read
    agg.snapshot(T0 + 1)
    agg.add("2", None)
    quiet = agg.snapshot(T0 + 2)  # account 1 sent nothing in this period

    text = snapshot_text(quiet).decode().splitlines()

    assert text[0].startswith("# aggregate at 2026-11-28T12:00:02.123Z: 1 event in 1.0s")
    assert text[2].split() == ["1", "0", "1", "0.0", "-", "-"]
    assert text[3].split() == ["2", "1", "2", "1.0", "?", "?"]


def test_counts_read_in_the_singular_for_one() -> None:
    assert counted(1, "event") == "1 event" and counted(0, "event") == "0 events"
    assert summary_line(1, 1, 1) == "1 event shown, 1 duplicate dropped, 1 payload was not an event"
    assert (
        summary_line(2, 0, 3) == "2 events shown, 0 duplicates dropped, 3 payloads were not events"
    )


def test_json_for_a_terminal_escapes_c1_controls_and_bidi_overrides() -> None:
    line = JsonRenderer().event({**EVENT, "data": "\x9b31mred\u202eevil\x7f é"}, "track/42", T0)
    safe = json_for_terminal(line)
    assert b"\xc2\x9b" in line and b"\xc2\x9b" not in safe and b"\xe2\x80\xae" not in safe
    assert b"\\u009b31mred\\u202eevil\\u007f \xc3\xa9" in safe  # printable text is kept
    assert orjson.loads(safe) == orjson.loads(line)
    assert json_for_terminal(b'{"a":"plain"}\n') == b'{"a":"plain"}\n'


@given(st.dictionaries(st.text(), st.text() | st.integers(-(2**63), 2**63 - 1), max_size=4))
def test_json_for_a_terminal_is_the_same_json_with_only_printable_text(
    document: dict[str, object],
) -> None:
    safe = json_for_terminal(orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE))
    text = safe.decode()
    assert orjson.loads(safe) == document
    assert text[:-1].isprintable() and text.endswith("\n")
