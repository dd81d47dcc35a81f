"""The README's walkthrough, run as written: exactly the ``sh`` blocks of its
"Walkthrough" section, in one bash (``set -euo pipefail``) from the project's directory,
against a live ``formula-ops serve`` on free ports with its own state directory.

The commands get only what a reader's shell would have: ``FORMULA_OPS_PORT`` and
``FORMULA_OPS_STATE_DIR`` of that server (the README's commands must honour them), no
other ``FORMULA_OPS_*`` variable, and no virtual environment on ``PATH`` (the README says
``.venv/bin/formula-ops``)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_runs import Server, sample_ports, serve_with_cli
from tests.test_readme import README, section

pytestmark = pytest.mark.slow
PROJECT = README.parent
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def walkthrough() -> list[str]:
    return SH_BLOCK.findall(section(README.read_text(), "Walkthrough"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_with_cli(
        tmp_path_factory.mktemp("serve-readme"), token=False, **sample_ports()
    )


def _shell_environment(server: Server) -> dict[str, str]:
    venv_bin = str(PROJECT / ".venv" / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORMULA_OPS_", "VIRTUAL"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(venv_bin)]
    env["PATH"] = os.pathsep.join(path)
    env["FORMULA_OPS_PORT"] = str(server.port)
    env["FORMULA_OPS_STATE_DIR"] = str(server.state_dir)
    return env


def test_the_walkthrough_covers_the_tour() -> None:
    script = "\n".join(walkthrough())
    for command in (
        "tokens create --role admin",
        "Idempotency-Key",
        "uuid",
        "--version 1.1.0 --wait",
        "-broken --wait",
        "audit list",
        "audit verify",
    ):
        assert command in script, command
    assert "uuidgen" not in script
    assert not re.search(r"(^|[\s$(])formula-ops ", script), "call .venv/bin/formula-ops"


def test_the_walkthrough_runs_as_written(server: Server) -> None:
    script = "\n".join(["set -euo pipefail", *walkthrough()])
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=PROJECT,
        env=_shell_environment(server),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    assert "Traceback" not in out + result.stderr
    # what the walkthrough shows happened
    assert "Audit trail intact" in out, out
    deployments = [line for line in out.splitlines() if re.match(r"Deployment backend \S+: ", line)]
    assert deployments == [
        "Deployment backend 1.1.0: success",
        "Deployment backend 1.2.0-broken: rolled_back",
    ], out
    assert "Unpinned backend 1.2.0-broken in local" in out
    audit = [line.split("\t") for line in out.splitlines() if "\t" in line]
    actions = {cells[4] for cells in audit if len(cells) > 4}
    assert {"token.create", "deployment.create", "pin.delete"} <= actions, audit
