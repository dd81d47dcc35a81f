"""Where the processes of one command keep their metrics (prometheus-client's
multiprocess mode), prepared by the parent in a fresh interpreter as the CLI does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PREPARE = (
    "import sys; from pathlib import Path; from prometheus_client import values; "
    "from app.core.metrics import prepare_multiprocess, Metrics; "
    "print(prepare_multiprocess(Path(sys.argv[1]))); "
    "Metrics().runs_finished.labels('deployment', 'success').inc(); "
    "print(values.ValueClass._multiprocess)"
)


@pytest.fixture
def live_process() -> Iterator[int]:
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


def prepare(state_dir: Path, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", PREPARE, str(state_dir)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.split()


def test_files_of_ended_processes_go_and_those_of_live_ones_stay(
    tmp_path: Path, live_process: int
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    for pid in (ended.pid, live_process):
        (directory / f"counter_{pid}.db").write_bytes(b"")
    (directory / f"gauge_livesum_{ended.pid}.db").write_bytes(b"")

    assert prepare(tmp_path) == [str(directory), "True"]

    left = {path.name for path in directory.iterdir()}
    assert f"counter_{ended.pid}.db" not in left
    assert f"gauge_livesum_{ended.pid}.db" not in left
    assert f"counter_{live_process}.db" in left
    # The preparing process counted in a file of its own (now ended: the next start
    # removes it).
    assert len([name for name in left if name.startswith("counter_")]) == 2


def test_the_operator_can_name_the_directory(tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere"
    assert prepare(tmp_path / "state", PROMETHEUS_MULTIPROC_DIR=str(chosen)) == [
        str(chosen),
        "True",
    ]
    assert not (tmp_path / "state" / "metrics").exists()
    assert list(chosen.glob("counter_*.db"))
