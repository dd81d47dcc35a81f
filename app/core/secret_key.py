"""The server-side secret (``FORMULA_OPS_SECRET_KEY``).

Production requires it in the settings, shared by every API replica. In development,
when it is not set, one is generated once and kept in ``<state_dir>/secret.key``
(mode 0600, in a 0700 directory), so that restarts keep reading what was sealed before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from app.core.settings import Settings
from app.core.state_dir import private_dir

SECRET_FILE = "secret.key"  # noqa: S105  (a file name)


class SecretKeyUnavailable(RuntimeError):
    """The secret is neither configured nor readable from the state directory."""


def load_secret_key(settings: Settings) -> bytes:
    """The configured secret, or in development the one kept under ``state_dir``."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().strip().encode()
    if settings.environment == "production":  # the settings refuse this already
        raise SecretKeyUnavailable("FORMULA_OPS_SECRET_KEY is required in production")
    return _local_secret(settings.state_dir / SECRET_FILE)


def _local_secret(path: Path) -> bytes:
    if not path.exists():
        _create(path)
    value = path.read_bytes().strip()
    if not value:
        raise SecretKeyUnavailable(
            f"{path} is empty; delete it to generate a new one, or set FORMULA_OPS_SECRET_KEY"
        )
    return value


def _create(path: Path) -> None:
    """Write a new secret under a temporary name, then link it into place: a concurrent
    starter either wins or reads the winner's complete file."""
    private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: use theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
