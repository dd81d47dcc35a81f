"""Structural rules of the code base, checked rather than hoped.

The layers, the absence of import circles and the worker's place are import-linter
contracts (``[tool.importlinter]`` in pyproject.toml, run by ``make test``); these tests
run them and prove that they break when the architecture does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.queue import JobName
from tests.helpers import REPO_ROOT
from workers.main import WorkerSettings

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
LAYERS = "app is layered: entry points, composition, domains, run engine, shared services, core"
ACYCLIC = "No import circle between sibling packages or modules anywhere in app"
CORE = "app.core imports no other package of app"
APP_WORKERS = "The application never imports the worker, but for the command that starts it"
WORKERS_APP = "The worker imports the application, never its command line"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's configuration, analysing the tree at ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _broken(output: str) -> set[str]:
    """The names of the contracts ``lint-imports`` reported broken."""
    return {line.split(" BROKEN")[0] for line in output.splitlines() if " BROKEN" in line}


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The packages the contracts name and their configuration, copied to ``tmp_path``."""
    ignore = shutil.ignore_patterns("__pycache__")
    for package in ("app", "workers"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The lowest layer importing a domain that imports it: a circle between packages.
        ("app/core/ids.py", "from app import deployments", {ACYCLIC, CORE, LAYERS}),
        # Two modules of one layer whose siblings may import each other: only the
        # acyclic contract sees this circle.
        ("app/api.py", "from app import main", {ACYCLIC}),
        # A circle between two modules of one package.
        ("app/runs/models.py", "from app.runs import schemas", {ACYCLIC}),
        # A domain starting the worker.
        ("app/deployments/service.py", "import workers.main", {APP_WORKERS, LAYERS}),
        # Two independent shared services, without a circle: only the layers see it.
        ("app/outbox/service.py", "from app.auth import roles", {LAYERS}),
        # The worker reaching for the command line that starts it.
        ("workers/cron.py", "from app.cli import main", {WORKERS_APP}),
    ],
)
def test_a_contract_breaks_when_the_architecture_does(
    project_copy: Path, module: str, line: str, broken: set[str]
) -> None:
    assert _lint_imports(project_copy).returncode == 0  # the copy itself is sound

    path = project_copy / module
    source = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in source
    path.write_text(source.replace(marker, f"{marker}\n{line}  # noqa: F401\n", 1))

    result = _lint_imports(project_copy)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert _broken(output) == broken, output


def test_worker_registers_exactly_the_job_names() -> None:
    registered = {function.name for function in WorkerSettings.functions}
    assert registered == {job.value for job in JobName}
