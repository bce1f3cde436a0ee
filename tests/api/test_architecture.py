"""The package layout of docs/architecture.md holds: no import cycle, small folders, and
the light entry points stay light (what they load is measured in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tracker_contract", "tracker_api", "subscriber")
HEAVY = ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "uvicorn", "pydantic")


def test_no_module_of_ours_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported != importer and graph.chain_exists(imported=importer, importer=imported):
                cycles.append(f"{importer} <-> {imported}")
    assert cycles == []


def test_no_folder_of_the_shipped_packages_holds_more_than_15_modules() -> None:
    crowded = {}
    for top in PACKAGES:
        for folder in [REPO / top, *(p.parent for p in (REPO / top).rglob("__init__.py"))]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > 15:
                crowded[str(folder.relative_to(REPO))] = len(modules)
    assert crowded == {}


def loaded_by(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter has loaded after ``statement``."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"import sys\n{statement}\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import subscriber.cli",  # what `mqtt-tail` loads before it parses its options
        "from tracker_api.service.validation import check_account_id; check_account_id('42')",
        "from tracker_contract.ids import account_id_problem; account_id_problem('42')",
    ],
)
def test_the_light_entry_points_load_no_web_framework_or_database(statement: str) -> None:
    assert loaded_by(statement) & set(HEAVY) == set()


def test_every_error_the_service_answers_with_has_its_metric_outcome_made_at_start() -> None:
    from tracker_api import app, errors, metrics

    assert app.build_api  # every module with errors of its own is loaded

    def leaves(base: type[errors.TrackerError]) -> set[type[errors.TrackerError]]:
        found = set()
        for error in base.__subclasses__():
            found |= leaves(error) | {error}
        return found

    # Abstract parents share their outcome with no answer of their own.
    outcomes = {error.outcome for error in leaves(errors.TrackerError)}
    outcomes -= {errors.TrackerError.outcome, errors.ServiceUnavailable.outcome}
    outcomes -= {errors.AccountHasEvents.outcome}  # the admin API's: never an event request
    assert outcomes <= set(metrics.REQUEST_OUTCOMES)
