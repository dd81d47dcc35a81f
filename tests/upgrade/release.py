"""The previous release, as the upgrade tests run it: its tree from this repository's
history, extracted into a folder, run with this virtual environment's Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import REPO_ROOT

MIGRATIONS = "migrations/versions"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout.strip()


def previous_release() -> str:
    """The commit of the previous release: the newest tag (other than the checked-out
    commit's own), else the parent of the commit that added the newest migration file,
    the code that ran on the schema before it. Needs the history (a full clone).
    ``FORMULA_OPS_TEST_UPGRADE_FROM`` (a commit or tag) names another one."""
    chosen = os.environ.get("FORMULA_OPS_TEST_UPGRADE_FROM")
    if chosen:
        return _git("rev-parse", f"{chosen}^{{commit}}")
    head = _git("rev-parse", "HEAD")
    for tag in _git("tag", "--sort=-creatordate").split():
        commit = _git("rev-list", "-n", "1", tag)
        if commit != head:
            return commit
    added = _git("log", "--diff-filter=A", "--format=%H", "--", MIGRATIONS).split()
    assert added, "no commit added a migration: the history is missing (a shallow clone?)"
    return _git("rev-parse", f"{added[0]}^")


def extract(commit: str, into: Path) -> Path:
    """The tree of ``commit`` under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=REPO_ROOT, stdout=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=False)
    archive.stdout.close()
    assert archive.wait() == 0, f"git archive {commit} failed"
    assert untar.returncode == 0, f"tar could not extract {commit}"
    return into


def python_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment of a process running the code of ``tree`` (its ``app`` first on
    the path), without the caller's Formula Ops settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {"PYTHONPATH": str(tree), "PYTHONFAULTHANDLER": "1", **extra}
    return env


def cli(*args: str) -> list[str]:
    """``formula-ops ARGS`` for the tree on PYTHONPATH (the console script would import
    the installed code)."""
    return [sys.executable, "-c", "from app.cli.main import main; main()", *args]


# What the old code's metadata holds: table -> column -> (nullable, has a server default).
_METADATA = """
import json
import app.models  # noqa: F401 - every table registered
from app.core.db import Base
print(json.dumps({
    name: {c.name: [bool(c.nullable), c.server_default is not None] for c in table.columns}
    for name, table in Base.metadata.tables.items()
}))
"""


def metadata_columns(tree: Path) -> dict[str, dict[str, Any]]:
    """The tables and columns the code of ``tree`` maps, read in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", _METADATA],
        cwd=tree,
        env=python_env(tree),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, f"the old code's models do not import:\n{done.stderr}"
    found: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found
