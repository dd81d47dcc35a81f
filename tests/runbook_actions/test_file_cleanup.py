"""``file_cleanup``: only old regular files whose name matches, only inside the allowed
folders, never through a link, never a directory; a dry run deletes nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.context import AppContext
from app.runbooks.actions.files import FileCleanupParams, file_cleanup
from app.runs.models import Level, StepStatus
from tests.runbook_actions.helpers import step_context

pytestmark = pytest.mark.one_backend("sqlite")

DAY = 86400


def age(path: Path, days: float) -> None:
    """Last modified ``days`` ago (a link itself, not its target)."""
    when = time.time() - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


def write(path: Path, size: int, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    age(path, days)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """logs/ to clean and outside/ that must survive, with every kind of trap."""
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    files = {
        "old": write(logs / "app.log", 100, 40),
        "old_nested": write(logs / "nginx" / "access.log", 250, 31),
        "new": write(logs / "fresh.log", 10, 1),
        "other_name": write(logs / "app.txt", 10, 40),
        "victim": write(outside / "victim.log", 10, 40),
        "outside_old": write(outside / "deep" / "old.log", 10, 40),
    }
    (logs / "dir.log").mkdir()  # a directory matching the pattern
    age(logs / "dir.log", 40)
    link = logs / "link.log"
    link.symlink_to(files["victim"])
    age(link, 40)
    (logs / "linked").symlink_to(outside / "deep")
    age(logs / "linked", 40)
    return {"logs": logs, "outside": outside, "link": link, **files}


def params(folder: Path, **changes: object) -> FileCleanupParams:
    return FileCleanupParams.model_validate(
        {"paths": [str(folder)], "pattern": "*.log", "older_than_days": 30, **changes}
    )


def survivors(tree: dict[str, Path]) -> set[str]:
    return {name for name, path in tree.items() if os.path.lexists(path)}


class TestDeleting:
    async def test_a_dry_run_lists_and_deletes_nothing(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        outcome = await file_cleanup(params(tree["logs"]), ctx)
        assert (outcome.status, outcome.level) == (StepStatus.SUCCESS, Level.OK)
        listed = {Path(f["path"]).name for f in outcome.data["files"]}
        assert listed == {"app.log", "access.log"}
        assert (outcome.data["matched"], outcome.data["deleted"]) == (2, 0)
        assert outcome.data["bytes"] == 350
        assert survivors(tree) == set(tree)
        assert outcome.data["summary"].startswith("would delete 2 file(s)")

    async def test_only_old_matching_regular_files_inside_are_deleted(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        outcome = await file_cleanup(params(tree["logs"], dry_run=False), ctx)
        assert outcome.status == StepStatus.SUCCESS
        assert (outcome.data["deleted"], outcome.data["bytes"]) == (2, 350)
        assert survivors(tree) == set(tree) - {"old", "old_nested"}
        assert (tree["logs"] / "dir.log").is_dir()
        assert (tree["logs"] / "linked").is_symlink()

        again = await file_cleanup(params(tree["logs"], dry_run=False), ctx)
        assert (again.data["matched"], again.data["deleted"]) == (0, 0)

    async def test_max_files_bounds_one_step(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        outcome = await file_cleanup(params(tree["logs"], dry_run=False, max_files=1), ctx)
        assert (outcome.data["deleted"], outcome.data["more"]) == (1, True)
        assert len(survivors(tree) & {"old", "old_nested"}) == 1

    async def test_a_folder_given_twice_is_walked_once(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        given = [str(tree["logs"]), str(tree["logs"] / "nginx"), str(tree["logs"])]
        outcome = await file_cleanup(params(tree["logs"], paths=given), ctx)
        assert (outcome.data["matched"], outcome.data["folders"]) == (2, [str(tree["logs"])])

    async def test_a_sub_folder_may_be_cleaned_alone(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        outcome = await file_cleanup(params(tree["logs"] / "nginx", dry_run=False), ctx)
        assert outcome.data["deleted"] == 1
        assert survivors(tree) == set(tree) - {"old_nested"}


class TestRefusals:
    @pytest.mark.parametrize(
        "path",
        [
            "{outside}",
            "{logs}/../outside",
            "{logs}/nginx/..",
            "{logs}/linked",  # a link to a folder outside
            "logs",
            "/",
        ],
    )
    async def test_a_path_outside_the_allowed_folders_is_refused(
        self, context: AppContext, tree: dict[str, Path], path: str
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        given = path.format(logs=tree["logs"], outside=tree["outside"])
        outcome = await file_cleanup(params(Path(given), dry_run=False), ctx)
        assert outcome.status == StepStatus.FAILURE
        assert (outcome.error or "").startswith("refused:")
        assert survivors(tree) == set(tree)

    async def test_nothing_is_allowed_by_default(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context)
        outcome = await file_cleanup(params(tree["logs"], dry_run=False), ctx)
        assert outcome.status == StepStatus.FAILURE
        assert "FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS" in (outcome.error or "")
        assert survivors(tree) == set(tree)

    async def test_a_file_is_not_a_folder_to_clean(
        self, context: AppContext, tree: dict[str, Path]
    ) -> None:
        ctx, _ = step_context(context, cleanup_paths=[tree["logs"]])
        outcome = await file_cleanup(params(tree["old"], dry_run=False), ctx)
        assert outcome.status == StepStatus.FAILURE
        assert survivors(tree) == set(tree)

    @pytest.mark.parametrize(
        "changes",
        [
            {"pattern": "../*.log"},
            {"pattern": "nginx/*.log"},
            {"pattern": ""},
            {"older_than_days": 0},
            {"older_than_days": 3651},
            {"max_files": 0},
            {"recursive": False},
        ],
    )
    def test_bad_parameters_are_refused(self, tmp_path: Path, changes: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            params(tmp_path, **changes)
