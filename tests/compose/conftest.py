"""Fixtures for tests/compose: the compose stacks under podman (`make test-compose`).

Everything that starts, waits for and removes containers is scripts/compose_stack.py; the
tests only drive it and look at what runs. One run at a time per machine (a lock), and
whatever an interrupted run left is removed before the first stack comes up.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import compose_stack
from scripts.compose_stack import Stack, Unavailable

REPO = Path(__file__).resolve().parents[2]

IMAGE_SIZES: dict[str, int] = {}


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Tools and images ready, no container of the test project left: the stacks' engine."""
    with compose_stack.exclusive():
        stack = Stack(tmp_path_factory.mktemp("compose-stack"))
        try:
            compose_stack.prepare(stack)
        except Unavailable as reason:
            pytest.skip(f"this machine cannot run the compose stacks: {reason}")
        IMAGE_SIZES.update(compose_stack.image_sizes(stack))
        stack.down("down (what an earlier run left)")
        yield stack
        stack.down("down (at the end)")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The duration of every stage, and the images' sizes, at the end of the run."""
    if not compose_stack.TIMINGS:
        return
    terminalreporter.section("compose stacks: timings")
    for stage, seconds in compose_stack.TIMINGS:
        terminalreporter.write_line(f"{stage:<48} {seconds:6.1f} s")
    for image, size in IMAGE_SIZES.items():
        terminalreporter.write_line(f"image {image:<42} {size / 1e6:6.0f} MB")
    for note in compose_stack.NOTES:
        terminalreporter.write_line(note)


def request(
    url: str,
    login: tuple[str, str] | None = None,
    timeout: float = 10,
    event: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """GET ``url``, or POST ``event`` to it as JSON, as event requests come with logins on
    (HTTP Basic with ``login``): (status, the body as JSON, or as text when it is not
    JSON: HAProxy's own 503 page when no tracker is ready)."""
    headers = {}
    data = None
    if login:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if event is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(event).encode()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers), timeout=timeout
        ) as answer:
            return answer.status, parse(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, parse(error.read())


def parse(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def history_ids(port: int, login: tuple[str, str], account: str = "1") -> set[str]:
    """Every eventId the history API has for ``account`` in the last hour, all pages."""
    found: set[str] = set()
    after = ""
    while True:
        query = f"account={account}&since=1h&limit=10000" + (f"&after={after}" if after else "")
        status, page = request(f"http://127.0.0.1:{port}/events?{query}", login)
        assert status == 200, page
        found.update(event["eventId"] for event in page["events"])
        if not page["next"]:
            return found
        after = page["next"]
