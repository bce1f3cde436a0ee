"""What ships runs: the wheel, installed outside the checkout, imports and starts.

An editable install hides a package that the build forgets (the checkout is on the path),
so this builds the wheel the way the image does, installs it into a fresh venv in a temp
folder and runs the console scripts from there. The dependencies come from the dev venv
through a path entry (no network needed); the project itself only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("tracker_contract", "tracker_api", "subscriber")
NOT_SOURCE = (".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
RUN_BY_ALEMBIC = "tracker_api.storage.migrations.env"  # a script alembic executes, not a module


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves a build/ folder whose stale files would
    # otherwise reach the next wheel, hiding a package the configuration no longer finds.
    source = tmp_path_factory.mktemp("source") / "project"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps",
        "--wheel-dir", out, source, cwd=out)  # fmt: skip
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding the wheel; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=venv).strip())  # fmt: skip
    # A plain path line: the dev venv's packages become importable, but its .pth files
    # (the editable install's finder among them) are not run.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, cwd=venv)  # fmt: skip
    yield venv / "bin"


def outside_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "MQTT_TAIL_"))}
    env.pop("PYTHONPATH", None)
    env["TRACKER_DATABASE_URL"] = f"sqlite:///{tmp / 'fresh.db'}"
    env["HOME"] = str(tmp)
    return env


def test_the_wheel_holds_every_package_and_its_data_and_nothing_of_the_tests(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages_in_checkout = {
        str(init.parent.relative_to(REPO))
        for top in SHIPPED
        for init in (REPO / top).rglob("__init__.py")
    }
    packages_in_wheel = {str(Path(n).parent) for n in names if n.endswith("/__init__.py")}
    assert packages_in_checkout <= packages_in_wheel
    assert "tracker_api/storage/migrations/script.py.mako" in names
    assert any(n.startswith("tracker_api/storage/migrations/versions/") for n in names)
    tools = ("devkit/", "tests/", "bench/", "scripts/", "data/")
    assert not [n for n in names if n.startswith(tools)]


def test_every_module_imports_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    script = (
        "import importlib, pkgutil, sys\n"
        "failed = []\n"
        f"for top in {SHIPPED!r}:\n"
        "    package = importlib.import_module(top)\n"
        "    assert '/site-packages/' in package.__file__, package.__file__\n"
        "    for info in pkgutil.walk_packages(package.__path__, top + '.'):\n"
        f"        if info.name == {RUN_BY_ALEMBIC!r}: continue\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except Exception as error:\n"
        "            failed.append(f'{info.name}: {error!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    run(installed / "python", "-c", script, cwd=tmp_path, env=outside_env(tmp_path))


def test_the_installed_commands_start_and_migrate_a_new_database(
    installed: Path, tmp_path: Path
) -> None:
    env = outside_env(tmp_path)
    assert "Usage" in run(installed / "tracker-api", "--help", cwd=tmp_path, env=env)
    assert "Usage" in run(installed / "mqtt-tail", "--help", cwd=tmp_path, env=env)

    run(installed / "tracker-api", "migrate", cwd=tmp_path, env=env)

    tables = run(installed / "python", "-c",
                 "import sqlite3; print(sorted(r[0] for r in sqlite3.connect('fresh.db')"
                 ".execute(\"select name from sqlite_master where type='table'\")))",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert "accounts" in tables
    assert "alembic_version" in tables
