"""data/seed.py says which database it seeded as one would type it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from data.seed import shown_url

REPO = Path(__file__).resolve().parents[2]


def test_the_seed_names_a_sqlite_file_under_the_current_directory_by_its_relative_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "var").mkdir()
    url = f"sqlite:///{tmp_path / 'var' / 'tracker.db'}"  # absolute, as make run passes it

    done = subprocess.run(
        [sys.executable, str(REPO / "data" / "seed.py"), "--count", "3", "--database-url", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("seeded sqlite:///var/tracker.db: 3 accounts"), done.stdout


def test_other_databases_are_shown_as_given_with_the_password_hidden(tmp_path: Path) -> None:
    outside = make_url("sqlite:////elsewhere/tracker.db")
    postgres = make_url("postgresql+psycopg://app:secret@db/tracker")

    assert shown_url(outside, cwd=tmp_path) == "sqlite:////elsewhere/tracker.db"
    assert shown_url(postgres, cwd=tmp_path) == "postgresql+psycopg://app:***@db/tracker"
    assert shown_url(make_url("sqlite:///var/t.db"), cwd=tmp_path) == "sqlite:///var/t.db"
