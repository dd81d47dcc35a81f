"""An invalid ``FORMULA_OPS_*`` variable, as a new user or a deployment script sets it:
every command says which variable is wrong in one line on stderr and exits 2 (bad usage),
without a traceback and without echoing the values (database URLs are secrets)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.serve_process import FORMULA_OPS

pytestmark = pytest.mark.slow
CANARY = "canary-db-password-5b1e"
DATABASE_URL = f"postgresql://formula:{CANARY}@127.0.0.1:1/formula_ops"


def _run(workdir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env["FORMULA_OPS_STATE_DIR"] = str(workdir / ".formula-ops")
    env.update(settings)
    return subprocess.run(
        [str(FORMULA_OPS), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"FORMULA_OPS_PORT": "eighty"}, "FORMULA_OPS_PORT"),
        # production without the shared secret: the variable to set is named
        ({"FORMULA_OPS_ENVIRONMENT": "production"}, "FORMULA_OPS_SECRET_KEY"),
        ({"FORMULA_OPS_HEALTH_CHECK__DISK_PATHS": '"/"'}, "FORMULA_OPS_HEALTH_CHECK__DISK_PATHS"),
        ({"FORMULA_OPS_HEALTH_CHECK__DISK_PATHS": "not json"}, "health_check"),
    ],
)
@pytest.mark.parametrize("command", [("migrate",), ("tokens", "list"), ("audit", "verify")])
def test_an_invalid_setting_is_one_line_and_exit_2(
    tmp_path: Path, command: tuple[str, ...], settings: dict[str, str], variable: str
) -> None:
    result = _run(tmp_path, *command, FORMULA_OPS_DATABASE_URL=DATABASE_URL, **settings)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("formula-ops: ")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert CANARY not in result.stderr


def test_a_shared_state_directory_is_refused_without_touching_it(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: tightening it would lock every other user out
    result = _run(tmp_path, "migrate", FORMULA_OPS_STATE_DIR=str(shared))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "FORMULA_OPS_STATE_DIR" in lines[0]
    assert "shared directory" in lines[0]
    assert (shared.stat().st_mode & 0o7777) == 0o1777
