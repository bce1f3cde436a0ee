"""What happens to each message: parse, drop duplicates, display or aggregate, and the
conditions that end a run (--count, --timeout, a signal, a closed pipe)."""

from __future__ import annotations

import logging
import os
import select
import stat
import time
from collections.abc import Callable
from typing import BinaryIO, Protocol

from rich.console import Console
from rich.live import Live

from subscriber.aggregate import Aggregator, Snapshot
from subscriber.dedup import Deduplicator
from subscriber.render import (
    Event,
    Renderer,
    lag_of,
    parse_event,
    printable,
    raw_preview,
    snapshot_json,
    snapshot_table,
    snapshot_text,
    summary_line,
)
from tracker_contract import topics

logger = logging.getLogger(__name__)

MAX_RAW_WARNINGS = 20
# How often a pipe on stdout is looked at for a reader that went away.
READER_CHECK_EVERY = 0.25


class AggregateView(Protocol):
    def show(self, snapshot: Snapshot) -> None: ...

    def close(self, summary: Snapshot) -> None: ...


class Output:
    """stdout as a batch sees it: what the batch produces is collected, then written and
    flushed at once, before the batch is acknowledged."""

    def __init__(self, stream: BinaryIO, escape: Callable[[bytes], bytes] | None = None) -> None:
        self.stream = stream
        self.escape = escape
        self._parts: list[bytes] = []
        self._pipe = _pipe_fd(stream)

    def reader_gone(self) -> bool:
        """Whether stdout is a pipe nobody reads any more (``mqtt-tail | head -n 1`` after
        head exited). A write would say so too, but only the next one, which may not come
        for a long time when the stream is quiet; like ``tail -f``, we ask the pipe: Linux
        reports its write end as POLLERR then, the BSDs as POLLHUP. Elsewhere, and for a
        socket or a file on stdout, the next failed write ends the tail."""
        if self._pipe is None:
            return False
        poller = select.poll()
        poller.register(self._pipe, 0)  # no events asked: only errors and hang-ups are told
        gone = select.POLLERR | select.POLLHUP
        return any(events & gone for _, events in poller.poll(0))

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        """Raises BrokenPipeError when the reader has gone."""
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        if self.escape is not None:
            data = self.escape(data)
        self.stream.write(data)
        self.stream.flush()


def _pipe_fd(stream: BinaryIO) -> int | None:
    """The descriptor of ``stream`` when it is a pipe that can be polled, else None."""
    if not hasattr(select, "poll"):
        return None  # pragma: no cover - Windows
    try:
        fd = stream.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None  # not a file (a test's buffer) or already closed


class TextView:
    """Reports as JSON lines (``--json``) or plain tables, through a writer."""

    def __init__(self, write: Callable[[bytes], None], *, json: bool) -> None:
        self.write = write
        self.encode = snapshot_json if json else snapshot_text

    def show(self, snapshot: Snapshot) -> None:
        self.write(self.encode(snapshot))

    def close(self, summary: Snapshot) -> None:
        self.show(summary)


class LiveView:
    """A table redrawn in place on a terminal; the summary stays on screen at the end."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = Live(console=console, auto_refresh=False, transient=True)
        self.live.start()

    def show(self, snapshot: Snapshot) -> None:
        self.live.update(snapshot_table(snapshot), refresh=True)

    def close(self, summary: Snapshot) -> None:
        self.live.stop()
        self.console.print(snapshot_table(summary))


class Pipeline:
    """The session's handler. Output is buffered per batch and flushed before the batch
    is acknowledged, so an acknowledged event has reached stdout."""

    def __init__(
        self,
        output: Output,
        *,
        renderer: Renderer | None = None,
        aggregator: Aggregator | None = None,
        view: AggregateView | None = None,
        dedup: Deduplicator | None = None,
        count: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.output = output
        self.renderer = renderer
        self.aggregator = aggregator
        self.view = view
        self.dedup = dedup or Deduplicator()
        self.count = count
        self.timeout = timeout
        self.shown = 0
        self.duplicates = 0
        self.malformed = 0
        self.stop_reason: str | None = None
        self.last_timestamp = ""
        """The latest ``timestamp`` shown: where a gap after a lost session begins."""
        self.last_arrival = time.monotonic()
        self._next_reader_check = 0.0

    def on_message(self, topic: str, payload: bytes | bytearray) -> bool:
        """A message from the broker, of the account its topic names."""
        # The topic's account, not the payload's: the broker's ACL decides who may publish
        # on track/<account>, so a payload cannot claim its way into another account's ids.
        return self.on_event(topics.account_of(topic) or "", topic, parse_event(payload), payload)

    def on_event(
        self, account: str, topic: str, event: Event | None, payload: bytes | bytearray
    ) -> bool:
        """One message already parsed: ``event`` (None when ``payload`` is not an event) of
        ``account``, whose ids it is deduplicated among. False: not shown, not to be
        acknowledged (the run is ending)."""
        if self.stop_reason is not None:
            return False  # not shown, so not acknowledged: the broker keeps it
        received = time.time()
        self.last_arrival = time.monotonic()
        if event is None:
            self._raw(topic, payload, received)
            return True
        if self.dedup.seen(account, event["eventId"]):
            self.duplicates += 1
            return True
        self.shown += 1
        timestamp = event.get("timestamp")
        # The tracker's RFC 3339 times (UTC, milliseconds) sort as text.
        if type(timestamp) is str and timestamp > self.last_timestamp:
            self.last_timestamp = timestamp
        aggregator = self.aggregator
        if aggregator is not None:
            named = event.get("accountId")
            aggregator.add(named if type(named) is str else account, lag_of(event, received))
            if self.view is not None and aggregator.due(received):
                self.view.show(aggregator.snapshot(received))
        elif self.renderer is not None:
            self.output.write(self.renderer.event(event, topic, received))
        if self.count is not None and self.shown >= self.count:
            self.stop_reason = "count"
        return True

    def _raw(self, topic: str, payload: bytes | bytearray, received: float) -> None:
        self.malformed += 1
        line = None
        if self.renderer is not None and self.aggregator is None:
            line = self.renderer.raw(topic, payload, received)
        if line is not None:
            self.output.write(line)
        if self.malformed <= MAX_RAW_WARNINGS:
            logger.warning(
                "not an event on %s (%d bytes): %s%s",
                printable(topic),
                len(payload),
                raw_preview(payload)[:80],
                "" if line is not None else "; skipped",
            )
            if self.malformed == MAX_RAW_WARNINGS:
                logger.warning("further payloads that are not events are only counted")

    def on_batch_end(self) -> bool:
        try:
            self.output.flush()
        except BrokenPipeError:
            self.stop_reason = "broken-pipe"
        return self.stop_reason != "broken-pipe"

    def on_tick(self, now: float) -> None:
        aggregator = self.aggregator
        if aggregator is not None and self.view is not None and aggregator.window is not None:
            if aggregator.due(now):
                self.view.show(aggregator.snapshot(now))
        monotonic = time.monotonic()
        if self.timeout is not None and self.stop_reason is None:
            if monotonic - self.last_arrival >= self.timeout:
                self.stop_reason = "timeout"
        if self.stop_reason is None and monotonic >= self._next_reader_check:
            self._next_reader_check = monotonic + READER_CHECK_EVERY
            if self.output.reader_gone():
                self.stop_reason = "broken-pipe"

    def finish(self) -> None:
        """The final summary: a report on stdout with --aggregate, a line on stderr always."""
        if self.aggregator is not None and self.view is not None:
            if self.stop_reason != "broken-pipe":
                self.view.close(self.aggregator.summary(time.time()))
                self.on_batch_end()
        logger.info("%s", summary_line(self.shown, self.duplicates, self.malformed))
