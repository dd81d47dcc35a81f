"""``file_cleanup``: the runbook's ``find /var/log -name "*.log" -mtime +30 -delete``,
made safe.

* Only inside the folders an admin allowed (``FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS``),
  judged after links are resolved (:mod:`.paths`); nowhere when none is set.
* The folders are walked with :func:`os.fwalk` without following links: every directory
  is opened relative to its parent's descriptor, so a directory swapped for a link while
  the walk runs is not entered, and the walk never leaves the folder it started in.
* Only regular files (``lstat``) whose *name* matches ``pattern`` and whose last change
  is more than ``older_than_days`` days ago are deleted, each by ``unlinkat`` in its
  directory's descriptor; a link is never followed (nor deleted), a directory never
  deleted.
* ``dry_run`` (the default) lists what would go and deletes nothing: the runbook runs it
  first. At most ``max_files`` files are deleted by one step.

Deleting again finds nothing more to delete: the action is idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from app.core.registry import Registry
from app.runbooks.actions.paths import PathRefused, cleanup_roots, resolve_inside
from app.runs.actions import ACTIONS, Action, Params, StepContext, StepOutcome, bounded
from app.runs.models import Level, StepStatus

LISTED = 200  # files named in the step's data
MAX_ENTRIES = 1_000_000  # directory entries looked at by one step

CleanupPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class FileCleanupParams(Params):
    paths: list[CleanupPath] = Field(
        min_length=1,
        max_length=20,
        description="Folders to clean (with their sub-folders), inside "
        "FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS.",
    )
    pattern: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^/\\\x00]+$",
        description="A glob for the file name only (`*.log`, `*.sql.gz`), as `find -name`.",
    )
    older_than_days: int = Field(ge=1, le=3650, description="Last modified longer ago.")
    dry_run: bool = Field(default=True, description="List what would be deleted; delete nothing.")
    max_files: int = Field(default=1000, ge=1, le=100_000, description="Deleted by one step.")


@dataclass
class Cleanup:
    matched: int = 0
    deleted: int = 0
    bytes: int = 0
    more: bool = False  # more files matched than max_files
    scanned: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Stop(Exception):
    pass


def clean(
    folders: list[Path], params: FileCleanupParams, stop: threading.Event, now: float
) -> Cleanup:
    """Walk ``folders`` (resolved, allowed) and delete (or list) the old matching files."""
    result = Cleanup()
    cutoff = now - params.older_than_days * 86400
    try:
        for folder in folders:
            _clean_folder(folder, params, cutoff, stop, result)
    except _Stop:
        pass
    return result


def _clean_folder(
    folder: Path, params: FileCleanupParams, cutoff: float, stop: threading.Event, out: Cleanup
) -> None:
    def on_error(exc: OSError) -> None:
        if len(out.errors) < 20:
            out.errors.append(f"{exc.filename or folder}: {exc.strerror}")

    for dirpath, _dirs, names, dirfd in os.fwalk(folder, follow_symlinks=False, onerror=on_error):
        for name in names:
            out.scanned += 1
            if out.scanned % 1000 == 0 and stop.is_set():
                raise _Stop
            if out.scanned > MAX_ENTRIES:
                out.more = True
                raise _Stop
            if not fnmatch.fnmatchcase(name, params.pattern):
                continue
            try:
                info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError as exc:
                on_error(exc)
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                continue
            if out.matched >= params.max_files:
                out.more = True
                raise _Stop
            out.matched += 1
            if not params.dry_run:
                try:
                    os.unlink(name, dir_fd=dirfd)  # a link in its place is removed, not followed
                except OSError as exc:
                    on_error(exc)
                    continue
                out.deleted += 1
            out.bytes += info.st_size
            if len(out.files) < LISTED:
                out.files.append(
                    {
                        "path": os.path.join(dirpath, name),
                        "size": info.st_size,
                        "modified_at": dt.datetime.fromtimestamp(info.st_mtime, dt.UTC).isoformat(),
                    }
                )


async def file_cleanup(params: FileCleanupParams, ctx: StepContext) -> StepOutcome:
    roots = cleanup_roots(ctx.context.settings)
    if not roots:
        return StepOutcome(
            StepStatus.FAILURE,
            error="refused: no cleanup folder is allowed (FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS)",
        )
    folders: list[Path] = []
    for path in params.paths:
        try:
            resolved, _root = resolve_inside(path, roots)
        except PathRefused as exc:
            return StepOutcome(StepStatus.FAILURE, error=f"refused: {exc}")
        if not resolved.is_dir():
            return StepOutcome(StepStatus.FAILURE, error=f"{path!r} is not a folder")
        folders.append(resolved)
    # A folder inside another one given is walked with it, once.
    folders = [f for f in folders if not any(f != o and f.is_relative_to(o) for o in folders)]
    folders = list(dict.fromkeys(folders))
    stop = threading.Event()
    try:
        result = await asyncio.to_thread(clean, folders, params, stop, time.time())
    except BaseException:
        stop.set()
        raise
    verb = "would delete" if params.dry_run else "deleted"
    count = result.matched if params.dry_run else result.deleted
    summary = (
        f"{verb} {count} file(s) named {params.pattern} older than {params.older_than_days} "
        f"day(s), {result.bytes} bytes"
        + (f"; stopped at max_files={params.max_files}" if result.more else "")
        + (f"; {len(result.errors)} error(s)" if result.errors else "")
    )
    data = {
        "summary": summary,
        "dry_run": params.dry_run,
        "folders": [str(f) for f in folders],
        "pattern": params.pattern,
        "older_than_days": params.older_than_days,
        "matched": result.matched,
        "deleted": result.deleted,
        "bytes": result.bytes,
        "more": result.more,
        "files": result.files,
        "files_truncated": result.matched > len(result.files),
        "errors": result.errors,
    }
    lines = [summary, *(f"  {f['path']} ({f['size']} bytes)" for f in result.files)]
    output, _ = bounded("\n".join(lines + result.errors))
    level = Level.WARNING if result.errors else Level.OK
    return StepOutcome(StepStatus.SUCCESS, output, level, data)


def register(registry: Registry) -> None:
    registry[ACTIONS].add("file_cleanup", Action(FileCleanupParams, file_cleanup, idempotent=True))
