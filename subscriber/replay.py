"""Replay from the tracker's archive (``GET /events``, docs/adr/0015-event-archive.md):
the history a ``--since`` run shows before going live, and the gap a lost session left.

Both run as the session's catch-up (``session.CatchUp``): subscribed first, so the broker
queues every live event for the session while the history is read; the history is shown
through the same pipeline (one deduplicator), and the seam waits for the archive's
watermark to pass the subscription, so it has neither gap nor repeat, or says which span
it could not cover (docs/adr/0004-delivery-guarantees.md, docs/adr/0018-bounded-history.md).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from subscriber.pipeline import Pipeline
from subscriber.render import counted, parse_event, printable
from tracker_contract import topics
from tracker_contract.durations import InvalidTime, parse_timestamp

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
ARCHIVE_LAG = 2.0
"""Seconds an acknowledged event may take to reach the archive: only for a history API
that reports no watermark (an older tracker), whose seam is read again once the
subscription is that old, with a warning that it cannot be checked."""
SEAM_OVERLAP = 5.0
"""Seconds before the subscription (or the last event shown) read again: clocks of the
tracker and the tail may differ, publishes may arrive out of timestamp order."""
ARCHIVE_WAIT = 30.0
"""Seconds the seam waits, by default, for the archive to store what was acknowledged
before the subscription (``--archive-wait``)."""
POLL_EVERY = 0.2
"""Seconds between two looks at the archive's watermark while waiting for it."""
END_OF_TIME = "9999-12-31T23:59:59.999Z"
"""The tail's ``until``: events a tracker with a fast clock stamped ahead are not left out."""
FLUSH_EVERY = 1000
REPORT_EVERY = 2.0
"""Seconds between progress lines when stderr is not a terminal."""


class ApiError(Exception):
    """The history API could not be read. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ArchiveState:
    """What an answer of the history API says of its archive (docs/adr/0018)."""

    read_at: datetime | None  # the server's clock when it read the archive
    watermark: datetime | None  # every event acknowledged before it is stored
    position: int | None  # the archive's position then: later rows come after it

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> ArchiveState:
        position = headers.get("x-archive-position", "")
        return cls(
            _time(headers.get("x-archive-read-at")),
            _time(headers.get("x-archive-watermark")),
            int(position) if position.isdigit() else None,
        )

    @property
    def complete(self) -> bool:
        """Whether it says enough to check the seam."""
        return None not in (self.read_at, self.watermark, self.position)


def _time(text: str | None) -> datetime | None:
    try:
        return parse_timestamp(text) if text else None
    except InvalidTime:
        return None


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

    @contextmanager
    def read(
        self, since: datetime, stored_after: int | None = None
    ) -> Iterator[tuple[ArchiveState, Iterator[bytes]]]:
        """The archive's state and, as they come, the lines of the events since ``since``
        (with ``stored_after``: only those stored after that position)."""
        # Imported here: a tail that never replays starts without an HTTP client.
        import httpx2 as httpx

        params: dict[str, str | list[str]] = {
            "since": iso(since),
            "until": END_OF_TIME,
            "account": self.accounts,
        }
        if stored_after is not None:
            params["stored_after"] = str(stored_after)
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
                lines = (line.encode() for line in response.iter_lines() if line)
                yield ArchiveState.of(response.headers), lines
        except httpx.HTTPError as error:
            raise ApiError(f"history API {self.api} unreachable: {error}") from None

    def state(self, since: datetime) -> ArchiveState:
        """The archive's state, from an answer of at most one event."""
        import httpx2 as httpx

        params = {"since": iso(since), "limit": "1", "account": self.accounts}
        try:
            response = httpx.get(f"{self.api}/events", params=params, auth=self.auth, timeout=30)
        except httpx.HTTPError as error:
            raise ApiError(f"history API {self.api} unreachable: {error}") from None
        if response.status_code != 200:
            raise ApiError(_refusal(response), response.status_code)
        return ArchiveState.of(response.headers)


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

    def waiting(self, watermark: datetime, read_at: datetime, waited: float, limit: float) -> None:
        """Progress while the seam waits for the archive: after a second, then now and
        then (only under ``logger``'s level, so ``--quiet`` hides it)."""
        now = time.monotonic()
        if waited < 1.0 or (self._progress is None and now - self._reported < REPORT_EVERY):
            return
        self._reported = now
        short = (read_at - watermark).total_seconds()
        text = (
            f"waiting for the archive to store what came before the subscription: complete "
            f"up to {iso(watermark)}, {short:.1f} s short ({waited:.0f} of {limit:.0f} s)"
        )
        if self._progress is not None:
            self._progress.update(self._task, description=text)
        else:
            logger.info("%s", text)

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
    shown after a session was lost.

    The seam: the subscription came first, so the broker queues every event published
    after it; the history must bring every one acknowledged before it. The first read
    notes the archive's state (``read_at``, after the subscription); once the archive's
    watermark has passed ``read_at``, every event acknowledged before the subscription is
    stored, and a second read of what was stored after the first read's position brings
    those that were late. The deduplicator drops whatever two of these show twice."""

    def __init__(
        self,
        pipeline: Pipeline,
        history: History,
        since: datetime | None,
        *,
        terminal: bool = False,
        archive_wait: float = ARCHIVE_WAIT,
    ) -> None:
        self.pipeline = pipeline
        self.history = history
        self.since = since
        self.terminal = terminal
        self.archive_wait = archive_wait
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
        since = _parsed_or(last, self.started)
        try:
            self._replay(_earlier(since, SEAM_OVERLAP), subscribed, stop)
        except ApiError as error:
            logger.warning("the gap cannot be refilled from the archive: %s", error)
            return
        logger.warning(
            "recovered %s from the archive (%s) since %s",
            counted(self.pipeline.shown - before, "event"),
            self.history.api,
            printable(last) or iso(self.started),
        )

    def _replay(self, since: datetime, subscribed: float, stop: Callable[[], bool]) -> None:
        # The archive holds each event once: what the deduplicator drops here is only
        # what the overlaps read again, not a redelivery worth reporting.
        duplicates = self.pipeline.duplicates
        with ReplayProgress(self.terminal) as progress:
            first = self._read(since, stop, progress)
            if stop():
                pass
            elif not first.complete:
                self._unchecked_seam(since, subscribed, stop, progress)
            else:
                assert first.read_at is not None and first.watermark is not None
                reached = self._await_archive(first.read_at, first.watermark, stop, progress)
                if not stop():
                    self._read(since, stop, progress, stored_after=first.position)
                if reached < first.read_at and not stop():
                    logger.warning(
                        "the archive has stored everything only up to %s: events acknowledged "
                        "between then and %s (before this tail subscribed) may be missing "
                        "here; replay them later with --since %s",
                        iso(reached),
                        iso(first.read_at),
                        iso(reached),
                    )
        self.pipeline.duplicates = duplicates

    def _await_archive(
        self,
        read_at: datetime,
        watermark: datetime,
        stop: Callable[[], bool],
        progress: ReplayProgress,
    ) -> datetime:
        """Until the watermark passes ``read_at`` (or ``archive_wait`` is over): the
        watermark reached."""
        started = time.monotonic()
        while watermark < read_at and not stop():
            waited = time.monotonic() - started
            if waited >= self.archive_wait:
                break
            progress.waiting(watermark, read_at, waited, self.archive_wait)
            time.sleep(POLL_EVERY)
            watermark = self.history.state(read_at).watermark or watermark
        return watermark

    def _unchecked_seam(
        self, since: datetime, subscribed: float, stop: Callable[[], bool], progress: ReplayProgress
    ) -> None:
        """A history API without a watermark: the seam is read again after ``ARCHIVE_LAG``,
        and the tail says it could not check it."""
        logger.warning(
            "the history API %s does not say how far its archive is complete (an older "
            "tracker?): events acknowledged up to %.0f s before this tail subscribed may be "
            "missing if its archive was behind",
            self.history.api,
            ARCHIVE_LAG,
        )
        while not stop() and time.time() < subscribed + ARCHIVE_LAG:
            time.sleep(0.05)
        seam = datetime.fromtimestamp(subscribed - SEAM_OVERLAP, UTC)
        self._read(max(since, seam), stop, progress)

    def _read(
        self,
        since: datetime,
        stop: Callable[[], bool],
        progress: ReplayProgress,
        stored_after: int | None = None,
    ) -> ArchiveState:
        pipeline = self.pipeline
        with self.history.read(since, stored_after) as (state, lines):
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
        pipeline.on_batch_end()
        return state


def _parsed_or(text: str, default: datetime) -> datetime:
    try:
        return parse_timestamp(text) if text else default
    except InvalidTime:
        return default


def _earlier(moment: datetime, seconds: float) -> datetime:
    """``moment`` less ``seconds``, or the earliest time there is."""
    try:
        return moment - timedelta(seconds=seconds)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)
