"""scripts/bootstrap-venv.sh: an interrupted bootstrap never leaves a venv `make` trusts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bootstrap-venv.sh"
OFFLINE_NO_OP = ["--no-index", "pip"]  # "already satisfied": exercises pip without a network


def bootstrap(venv: Path, *pip_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), str(venv), *pip_args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )


def pip_works(venv: Path) -> bool:
    check = [str(venv / "bin" / "python"), "-m", "pip", "--version"]
    return subprocess.run(check, capture_output=True).returncode == 0


def test_a_venv_left_without_pip_is_rebuilt_and_a_complete_one_is_kept(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    # What a Ctrl-C in the first second leaves: the interpreter is there, pip is not.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert not pip_works(venv)

    repaired = bootstrap(venv, *OFFLINE_NO_OP)

    assert repaired.returncode == 0, repaired.stderr
    assert "incomplete" in repaired.stderr
    assert pip_works(venv)
    assert (venv / ".installed").exists()

    marker = venv / "kept"
    marker.touch()
    again = bootstrap(venv, *OFFLINE_NO_OP)
    assert again.returncode == 0, again.stderr
    assert marker.exists()
    assert "incomplete" not in again.stderr

    # An install that stops half-way takes the stamp with it, so `make` tries again.
    failed = bootstrap(venv, "--no-index", "no-such-package-here")
    assert failed.returncode != 0
    assert not (venv / ".installed").exists()


def test_each_phase_of_a_bootstrap_says_what_it_does_and_pips_lines_come_through(
    tmp_path: Path,
) -> None:
    """A first `make run` is not silent for half a minute: the venv, the install (with
    pip's line per package) and the end are each announced."""
    venv = tmp_path / ".venv"

    done = bootstrap(venv, *OFFLINE_NO_OP)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"[bootstrap] creating the virtualenv {venv} with Python 3.")
    assert lines[1] == f"[bootstrap] installing into {venv}: pip install --no-index pip " + (
        "(the first time takes a minute or so)"
    )
    assert any("Requirement already satisfied: pip" in line for line in lines[2:-1])
    assert lines[-1].startswith(f"[bootstrap] {venv} is ready (")
