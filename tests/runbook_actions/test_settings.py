"""``FORMULA_OPS_RUNBOOKS__*``: the folders the file actions may touch, as an admin
writes them (comma-separated or a JSON list), absolute and without ``..``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.settings import Settings


def test_folders_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMULA_OPS_RUNBOOKS__LOG_PATHS", "/var/log/nginx, /srv/app/logs")
    monkeypatch.setenv("FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS", '["/var/log/app"]')
    runbooks = Settings().runbooks
    assert runbooks.log_paths == ["/var/log/nginx", "/srv/app/logs"]
    assert runbooks.cleanup_paths == ["/var/log/app"]


def test_none_by_default() -> None:
    runbooks = Settings().runbooks
    assert (runbooks.log_paths, runbooks.cleanup_paths) == ([], [])


@pytest.mark.parametrize("value", ["var/log", "/var/log/../etc", "/var/log,relative"])
def test_a_relative_folder_or_dotdot_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS", value)
    with pytest.raises(ValidationError):
        Settings()
