"""Replay from the tracker's archive (``GET /events``, docs/adr/0015-event-archive.md):
the history a ``--since`` run shows before going live, and the gap a lost session left.

Both run as the session's catch-up (``session.CatchUp``): subscribed first, so the broker
queues every live event for the session while the history is read; the history is shown
through the same pipeline (one deduplicator), so the seam has neither gap nor repeat
(docs/adr/0004-delivery-guarantees.md).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta

import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from subscriber.pipeline import Pipeline
from subscriber.render import counted, parse_event
from tracker_contract import topics
from tracker_contract.durations import parse_timestamp

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
ARCHIVE_LAG = 2.0
"""Seconds an acknowledged event may take to reach the archive (its target, docs/benchmarks.md):
the seam is read again once the subscription is that old."""
SEAM_OVERLAP = 5.0
"""Seconds before the subscription (or the last event shown) read again: clocks of the
tracker and the tail may differ, publishes may arrive out of timestamp order."""
FLUSH_EVERY = 1000
REPORT_EVERY = 2.0
"""Seconds between progress lines when stderr is not a terminal."""


class ApiError(Exception):
    """The history API could not be read. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class History:
    """The archive's events from a point in time up to now, as NDJSON lines."""

    def __init__(
        self,
        api: str,
        accounts: list[str],
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.api = api.rstrip("/")
        self.accounts = [account for account in accounts if account != "+"]
        self.auth = (username, password or "") if username else None

    def lines(self, since: datetime) -> Generator[bytes]:
        # Imported here: a tail that never replays starts without an HTTP client.
        import httpx2 as httpx

        params: dict[str, str | list[str]] = {"since": iso(since), "account": self.accounts}
        try:
            with httpx.stream(
                "GET",
                f"{self.api}/events",
                params=params,
                headers={"Accept": NDJSON},
                auth=self.auth,
                timeout=30,
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise ApiError(_refusal(response), response.status_code)
                for line in response.iter_lines():
                    if line:
                        yield line.encode()
        except httpx.HTTPError as error:
            raise ApiError(f"history API {self.api} unreachable: {error}") from None


def _refusal(response: object) -> str:
    status = getattr(response, "status_code", 0)
    try:
        detail = orjson.loads(getattr(response, "content", b""))["detail"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = getattr(response, "reason_phrase", "")
    return f"history API refused ({status}): {detail}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReplayProgress:
    """Events replayed and their rate on stderr: a bar on a terminal, a line now and then
    when piped (only under ``logger``'s level, so ``--quiet`` hides it)."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self._progress: Progress | None = None
        self.count = 0
        self._started = self._reported = time.monotonic()

    def __enter__(self) -> ReplayProgress:
        if self.terminal:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                console=Console(file=sys.stderr),
                transient=True,
            )
            self._task = self._progress.add_task("replaying from the archive")
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self) -> None:
        self.count += 1
        if self.count % 200:
            return
        now = time.monotonic()
        rate = self.count / max(now - self._started, 1e-9)
        text = f"replaying from the archive: {self.count:,} events, {rate:,.0f}/s"
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        elif now - self._reported >= REPORT_EVERY:
            self._reported = now
            logger.info("%s", text)


class Replayer:
    """The session's catch-up: from ``since`` on the first connection, from the last event
    shown after a session was lost."""

    def __init__(
        self,
        pipeline: Pipeline,
        history: History,
        since: datetime | None,
        *,
        terminal: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.history = history
        self.since = since
        self.terminal = terminal
        self.started = datetime.now(UTC)
        self._gap = False

    def due(self, *, first: bool, session_present: bool) -> bool:
        self._gap = not first and not session_present
        return self._gap or (first and self.since is not None)

    def run(self, stop: Callable[[], bool]) -> None:
        subscribed = time.time()
        before = self.pipeline.shown
        if not self._gap:
            assert self.since is not None
            self._replay(self.since, subscribed, stop)
            logger.info(
                "replayed %s since %s from %s",
                counted(self.pipeline.shown - before, "event"),
                iso(self.since),
                self.history.api,
            )
            return
        # Every account's events up to the last one shown were shown or are in the
        # deduplicator: the gap starts there, whichever account was quiet before.
        last = self.pipeline.last_timestamp
        since = parse_timestamp(last) if last else self.started
        try:
            self._replay(since - timedelta(seconds=SEAM_OVERLAP), subscribed, stop)
        except ApiError as error:
            logger.warning("the gap cannot be refilled from the archive: %s", error)
            return
        logger.warning(
            "recovered %s from the archive (%s) since %s",
            counted(self.pipeline.shown - before, "event"),
            self.history.api,
            last or iso(self.started),
        )

    def _replay(self, since: datetime, subscribed: float, stop: Callable[[], bool]) -> None:
        # The archive holds each event once: what the deduplicator drops here is only
        # what the overlaps read again, not a redelivery worth reporting.
        duplicates = self.pipeline.duplicates
        with ReplayProgress(self.terminal) as progress:
            self._read(since, stop, progress)
            # An event acknowledged just before the subscription may reach the archive
            # a little later: read that stretch again once it has had the time.
            while not stop() and time.time() < subscribed + ARCHIVE_LAG:
                time.sleep(0.05)
            seam = datetime.fromtimestamp(subscribed - SEAM_OVERLAP, UTC)
            self._read(max(since, seam), stop, progress)
        self.pipeline.duplicates = duplicates

    def _read(self, since: datetime, stop: Callable[[], bool], progress: ReplayProgress) -> None:
        pipeline = self.pipeline
        lines = self.history.lines(since)
        try:
            for line in lines:
                if stop():
                    break
                # Parsed once: the account (for its topic and deduplication) is the event's.
                event = parse_event(line)
                account = "+" if event is None else str(event.get("accountId", "+"))
                pipeline.on_event(account, topics.track(account), event, line)
                progress.advance()
                if progress.count % FLUSH_EVERY == 0 and not pipeline.on_batch_end():
                    break
        finally:
            lines.close()  # ends the HTTP stream when stopped early
        pipeline.on_batch_end()
