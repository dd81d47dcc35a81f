"""The state directory holds the SQLite database (with its ``-wal``/``-shm`` files), the
embedded Redis's files, pid files and the ``process`` driver's records and service
logs: all readable by this service's user only. Directories are 0700 and files 0600;
an existing directory (from an earlier version) is tightened on start."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# What this service keeps directly in the state directory (the directory may be shared
# with other things: nothing else in it is touched).
OWN_PREFIXES = ("formula-ops.db", "redis.")
OWN_TREES = ("processes",)


class SharedDirectory(ValueError):
    """The state directory is a shared one such as ``/tmp``: tightening it would lock
    every other user out, and anyone may plant files in it."""


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) 0700; tighten it when it exists.

    A shared directory (world-writable with the sticky bit, such as ``/tmp``) is refused
    rather than tightened."""
    with contextlib.suppress(FileNotFoundError):
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode) and mode & stat.S_ISVTX and mode & stat.S_IWOTH:
            raise SharedDirectory(
                f"{path} is a shared directory (world-writable, sticky): give Formula Ops "
                f"a folder of its own, such as {path / 'formula-ops'}"
            )
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for folder in (path, *created):
        _chmod(folder, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty and 0600 when it is missing; tighten it when it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    _chmod(path, FILE_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    _chmod(path, FILE_MODE)


def secure_state_dir(state_dir: Path) -> Path:
    """Create the state directory 0700, and tighten what this service keeps in it."""
    private_dir(state_dir)
    for entry in state_dir.iterdir():
        if entry.name.startswith(OWN_PREFIXES) and entry.is_file() and not entry.is_symlink():
            _chmod(entry, FILE_MODE)
    for name in OWN_TREES:
        tree = state_dir / name
        if tree.is_dir() and not tree.is_symlink():
            _tighten_tree(tree)
    return state_dir


def _tighten_tree(root: Path) -> None:
    _chmod(root, DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            _chmod(Path(folder, name), DIR_MODE)
        for name in files:
            _chmod(Path(folder, name), FILE_MODE)


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        current = stat.S_IMODE(path.lstat().st_mode)
        if current & ~mode and not stat.S_ISLNK(path.lstat().st_mode):
            os.chmod(path, current & mode)
