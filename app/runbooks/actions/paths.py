"""Which files the file actions may touch: only what lies inside the folders an admin
allowed (``FORMULA_OPS_RUNBOOKS__LOG_PATHS``, ``FORMULA_OPS_RUNBOOKS__CLEANUP_PATHS``),
judged after every symbolic link is resolved, so neither ``..`` nor a link leads out.

A step's path is data from a caller; the allowed folders are the admin's. A path with a
``..`` part is refused as written (even when it would land inside), a relative one too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from app.core.settings import Settings


class PathRefused(ValueError):
    """A path outside the allowed folders (the message names the path, never more)."""


def log_roots(settings: Settings) -> list[Path]:
    """Where ``security_log_scan`` may read: the configured folders and the control
    plane's own service logs (the process driver's ``<state_dir>/processes``)."""
    roots = [Path(p) for p in settings.runbooks.log_paths]
    return [*roots, settings.state_dir / "processes"]


def cleanup_roots(settings: Settings) -> list[Path]:
    """Where ``file_cleanup`` may delete (nowhere unless configured)."""
    return [Path(p) for p in settings.runbooks.cleanup_paths]


def resolve_inside(path: str, roots: Iterable[Path]) -> tuple[Path, Path]:
    """``path`` with its links resolved, and the allowed root that holds it; raises
    :class:`PathRefused` when it is relative, has a ``..`` part or lies outside every
    root (each root is resolved too: ``/var/log`` may itself be a link)."""
    if "\x00" in path or not os.path.isabs(path):
        raise PathRefused(f"{path!r} is not an absolute path")
    if ".." in Path(path).parts:
        raise PathRefused(f"{path!r} has a '..' part")
    resolved = Path(os.path.realpath(path))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved, real_root
    raise PathRefused(f"{path!r} is outside the allowed folders")
