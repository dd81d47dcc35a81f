"""The previous release's tree, extracted once per test process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.upgrade.release import extract, previous_release


@dataclass(frozen=True)
class Release:
    commit: str
    tree: Path


@pytest.fixture(scope="session")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    commit = previous_release()
    return Release(commit, extract(commit, tmp_path_factory.mktemp("previous-release")))
