"""Client id slots live in a private state directory that nobody else can tamper with."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tracker_api.config import load_settings
from tracker_api.service.broker import BrokerConnection, Session
from tracker_api.service.client_ids import ClientIdSlot, StateDirError


def test_slots_are_distinct_while_held_and_reused_after_release(tmp_path: Path) -> None:
    first, second = ClientIdSlot("t", tmp_path / "state"), ClientIdSlot("t", tmp_path / "state")
    assert first.client_id.endswith("-0") and second.client_id.endswith("-1")
    first.release()
    third = ClientIdSlot("t", tmp_path / "state")
    second.release()
    third.release()

    assert third.client_id == first.client_id
    for directory in (tmp_path / "state", tmp_path / "state" / "client-slots"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    slots = tmp_path / "state" / "client-slots"
    slots.mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "state", 0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    for slot in range(3):
        (slots / f"t-{os.uname().nodename.split('.')[0][:20]}-{slot}.lock").symlink_to(victim)

    with pytest.raises(StateDirError, match="cannot open"):
        ClientIdSlot("t", tmp_path / "state")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o722])
def test_a_directory_others_may_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)

    with pytest.raises(StateDirError, match="writable by group or others"):
        ClientIdSlot("t", state)


def test_a_directory_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)
    else:  # pragma: no cover - depends on who runs the tests
        pytest.skip("needs root to hand a directory to another user")

    with pytest.raises(StateDirError, match="belongs to uid 65534"):
        ClientIdSlot("t", state)


def test_a_symlinked_slot_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "state" / "client-slots").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(StateDirError, match="not a directory"):
        ClientIdSlot("t", tmp_path / "state")


def test_the_publisher_takes_its_slot_under_the_configured_state_dir(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", client_id_prefix="p")
    publisher = BrokerConnection.for_worker(settings, session=Session.CLEAN)

    assert publisher.client_id.startswith("p-")
    assert list((tmp_path / "state" / "client-slots").iterdir())


def test_the_server_refuses_an_unsafe_state_dir_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)
    result = subprocess.run(
        [sys.executable, "-m", "tracker_api"],
        env={**os.environ, "TRACKER_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("tracker-api: TRACKER_STATE_DIR: ")
    assert "writable by group or others" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
