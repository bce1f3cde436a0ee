import io
import logging
import os
from pathlib import Path

import orjson
import pytest

from subscriber.aggregate import Aggregator
from subscriber.dedup import Deduplicator
from subscriber.pipeline import MAX_RAW_WARNINGS, Output, Pipeline, TextView
from subscriber.render import JsonRenderer, PlainRenderer


def payload(n: int, account: str = "1") -> bytes:
    return orjson.dumps(
        {
            "eventId": f"e{n}",
            "accountId": account,
            "timestamp": "2026-11-28T12:00:00.000Z",
            "data": "d",
        }
    )


def test_nothing_is_written_before_the_batch_ends_and_duplicates_are_dropped() -> None:
    out = io.BytesIO()
    pipeline = Pipeline(Output(out), renderer=JsonRenderer(), dedup=Deduplicator(10))
    assert pipeline.on_message("track/1", payload(1))
    assert pipeline.on_message("track/1", payload(1))  # redelivery: acknowledged, not shown
    assert out.getvalue() == b""
    assert pipeline.on_batch_end()
    assert [orjson.loads(line)["eventId"] for line in out.getvalue().splitlines()] == ["e1"]
    assert (pipeline.shown, pipeline.duplicates) == (1, 1)


def test_an_event_parsed_by_the_replay_shares_the_deduplication_of_live_messages() -> None:
    """The archive's replay hands over events it parsed itself: the live redelivery of one
    is dropped, the same eventId in another account is not."""
    out = io.BytesIO()
    pipeline = Pipeline(Output(out), renderer=JsonRenderer(), dedup=Deduplicator(10))
    line = payload(1)
    assert pipeline.on_event("1", "track/1", orjson.loads(line), line)
    assert pipeline.on_message("track/1", line)
    assert pipeline.on_message("track/2", payload(1, account="2"))
    assert pipeline.on_event("+", "track/+", None, b"not an event")
    assert pipeline.on_batch_end()
    assert (pipeline.shown, pipeline.duplicates, pipeline.malformed) == (2, 1, 1)
    shown = [orjson.loads(line)["accountId"] for line in out.getvalue().splitlines()[:2]]
    assert shown == ["1", "2"]


def test_count_stops_and_later_messages_stay_unacknowledged() -> None:
    pipeline = Pipeline(Output(io.BytesIO()), renderer=JsonRenderer(), count=2)
    assert pipeline.on_message("track/1", payload(1))
    assert pipeline.on_message("track/1", payload(2))
    assert pipeline.stop_reason == "count"
    assert pipeline.on_message("track/1", payload(3)) is False


def test_timeout_when_nothing_arrives() -> None:
    pipeline = Pipeline(Output(io.BytesIO()), renderer=JsonRenderer(), timeout=0.01)
    pipeline.last_arrival -= 1
    pipeline.on_tick(0.0)
    assert pipeline.stop_reason == "timeout"


class ClosedPipe(io.BytesIO):
    def flush(self) -> None:
        raise BrokenPipeError


def test_a_closed_pipe_stops_without_acknowledging() -> None:
    pipeline = Pipeline(Output(ClosedPipe()), renderer=PlainRenderer())
    pipeline.on_message("track/1", payload(1))
    assert pipeline.on_batch_end() is False
    assert pipeline.stop_reason == "broken-pipe"
    assert pipeline.on_batch_end() is False
    pipeline.finish()


def test_a_pipe_whose_reader_went_away_stops_the_tail_before_any_write() -> None:
    read_end, write_end = os.pipe()
    with open(write_end, "wb") as stream:
        pipeline = Pipeline(Output(stream), renderer=PlainRenderer())
        pipeline.on_tick(0.0)
        assert pipeline.stop_reason is None  # read by someone: carry on
        os.close(read_end)
        pipeline._next_reader_check = 0.0  # the next look, without waiting for its time
        pipeline.on_tick(0.0)
        assert pipeline.stop_reason == "broken-pipe"


def test_only_a_pipe_is_asked_for_its_reader(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as file:
        assert Output(file).reader_gone() is False
    assert Output(io.BytesIO()).reader_gone() is False


def test_raw_payloads_are_warned_about_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.BytesIO()
    pipeline = Pipeline(Output(out), renderer=JsonRenderer())
    with caplog.at_level(logging.WARNING):
        for _ in range(MAX_RAW_WARNINGS + 5):
            assert pipeline.on_message("track/1", b"junk")
    pipeline.on_batch_end()
    assert out.getvalue() == b""  # --json skips them
    assert pipeline.malformed == MAX_RAW_WARNINGS + 5
    assert len(caplog.records) == MAX_RAW_WARNINGS + 1


def test_aggregate_reports_every_n_and_a_summary_at_the_end() -> None:
    out = io.BytesIO()
    output = Output(out)
    aggregator = Aggregator(every=2, now=0.0)
    pipeline = Pipeline(output, aggregator=aggregator, view=TextView(output.write, json=True))
    for n in range(5):
        pipeline.on_message(f"track/{n % 2}", payload(n, account=str(n % 2)))
    pipeline.on_message("track/9", orjson.dumps({"eventId": "noacct"}))
    pipeline.on_batch_end()
    pipeline.finish()
    reports = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["type"] for r in reports] == ["aggregate", "aggregate", "aggregate", "summary"]
    assert {a["accountId"]: a["count"] for a in reports[-1]["accounts"]} == {"0": 3, "1": 2, "9": 1}


def test_aggregate_by_window_reports_on_ticks() -> None:
    out = io.BytesIO()
    output = Output(out)
    aggregator = Aggregator(window=1.0, now=0.0)
    pipeline = Pipeline(output, aggregator=aggregator, view=TextView(output.write, json=False))
    pipeline.on_message("track/1", payload(1))
    pipeline.on_tick(0.5)
    pipeline.on_tick(1.5)
    pipeline.on_batch_end()
    assert out.getvalue().startswith(b"# aggregate")


def test_a_terminal_escape_applies_to_the_whole_batch() -> None:
    out = io.BytesIO()
    pipeline = Pipeline(Output(out, escape=bytes.upper), renderer=JsonRenderer())
    pipeline.on_message("track/1", payload(1))
    assert pipeline.on_batch_end()
    assert out.getvalue().startswith(b'{"EVENTID":"E1"')
