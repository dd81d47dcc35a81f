"""Structural rules of the code base, checked rather than hoped."""

from __future__ import annotations

import ast

from app.core.queue import JobName
from tests.helpers import REPO_ROOT
from workers.main import WorkerSettings


def _imports(path: str) -> set[str]:
    tree = ast.parse((REPO_ROOT / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_app_never_imports_workers() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(
            name
            for name in _imports(str(path.relative_to(REPO_ROOT)))
            if name.split(".")[0] == "workers"
        )
        for path in (REPO_ROOT / "app").rglob("*.py")
    }
    offenders = {path: names for path, names in offenders.items() if names}
    # The CLI is the one composition point that starts a worker in `serve` and `worker`.
    assert set(offenders) <= {"app/cli/server.py"}, offenders


def test_worker_registers_exactly_the_job_names() -> None:
    registered = {function.name for function in WorkerSettings.functions}
    assert registered == {job.value for job in JobName}
