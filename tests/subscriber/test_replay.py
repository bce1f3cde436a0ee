"""The replay's pieces that need no server: progress reports and option parsing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from subscriber import replay
from subscriber.cli import tail
from subscriber.replay import ReplayProgress


def test_a_piped_replay_reports_progress_as_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "REPORT_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="subscriber.replay"), ReplayProgress(False) as bar:
        for _ in range(400):
            bar.advance()
    assert "replaying from the archive: 400 events" in caplog.text


def test_a_terminal_replay_draws_a_bar_and_clears_it() -> None:
    with ReplayProgress(True) as bar:
        for _ in range(400):
            bar.advance()
    assert bar.count == 400


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--since", "yesterday"], "not a time: 'yesterday'"),
        (["--since", "999999d"], "out of range: '999999d' reaches back before the year 1"),
        (["--since", "0001-01-01T00:00:00+01:00"], "out of range"),
        (["--since", "1m", "--api", "127.0.0.1:9000"], "is not an http:// or https:// URL"),
    ],
)
def test_bad_since_or_api_values_are_usage_errors(args: list[str], error: str) -> None:
    result = CliRunner().invoke(tail, args)
    assert result.exit_code == 2
    assert error in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_iso_times_are_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
    assert replay.iso(moment) == "2026-11-28T12:00:00.123Z"
