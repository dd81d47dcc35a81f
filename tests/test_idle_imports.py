"""What an idle server process holds: the API (``formula-ops api``: the command line,
uvicorn, the application and its context) and a worker (``python -m workers.supervisor``
as ``worker --processes N`` starts it: the worker, its start-up's context and schema
check) import none of the libraries only some requests or jobs need. Each loads them
when first used (bench/README.md, ``idle_rss.py``: every one of them is resident memory in
every process). Each process is a fresh interpreter: seconds each (up to 16 s seen on
a loaded host)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import REPO_ROOT

# Loaded when a webhook or channel is sent to (or its URL checked), a status page
# rendered, an HTTP step or verification run, an S3 storage or Docker engine opened, a
# migration run.
ON_FIRST_USE = (
    "aiohttp",
    "yarl",
    "apprise",
    "jinja2",
    "httpx",
    "alembic",
    "boto3",
    "botocore",
    "docker",
    # PyJWT, which redis-py imports for a token authentication never used here: ``jwt``
    # itself is always there as a stand-in (app/__init__.py); the real package brings
    # its submodules.
    "jwt.api_jwt",
)
# Not in a worker at all: the HTTP side.
API_ONLY = ("fastapi", "starlette", "uvicorn")


def _loaded(script: str, tmp_path: Path) -> dict[str, bool]:
    """Run ``script`` (which leaves ``checked``, names to look up) in a fresh interpreter;
    which of them it imported."""
    report = textwrap.dedent(
        """
        import json, sys
        print(json.dumps({name: name in sys.modules for name in checked}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + report, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def test_every_checked_library_is_installed() -> None:
    """Their absence from the processes below means something only if they could load."""
    for name in (*ON_FIRST_USE, *API_ONLY):
        assert importlib.util.find_spec(name) is not None, name


def test_the_api_process_imports_no_library_of_a_first_use(tmp_path: Path) -> None:
    loaded = _loaded(
        f"""
        import asyncio, sys
        import app.cli.main
        import uvicorn
        from app.bootstrap import build_context
        from app.core.settings import Settings
        from app.main import create_app

        settings = Settings(state_dir=sys.argv[1], redis_url="redis://127.0.0.1:9/0")
        application = create_app(settings)
        asyncio.run(build_context(settings).aclose())
        checked = {(*ON_FIRST_USE, "fastapi", "uvicorn")!r}
        """,
        tmp_path,
    )
    assert loaded.pop("fastapi")
    assert loaded.pop("uvicorn")
    assert loaded == dict.fromkeys(ON_FIRST_USE, False)


def test_a_worker_process_imports_neither_the_http_side_nor_a_first_use(
    tmp_path: Path,
) -> None:
    loaded = _loaded(
        f"""
        import asyncio, sys
        import workers.supervisor
        from app.bootstrap import build_context
        from app.core.migrate import schema_is_current
        from app.core.settings import Settings
        from workers.main import create_worker

        settings = Settings(state_dir=sys.argv[1], redis_url="redis://127.0.0.1:9/0")

        async def start():
            worker = create_worker(settings, handle_signals=False)
            context = build_context(settings)
            assert not await schema_is_current(context.engine)  # never migrated
            await context.aclose()
            await worker.pool.aclose()  # never connected: nothing to tell Redis

        asyncio.run(start())
        checked = {(*ON_FIRST_USE, *API_ONLY, "arq")!r}
        """,
        tmp_path,
    )
    assert loaded.pop("arq")
    assert loaded == dict.fromkeys((*ON_FIRST_USE, *API_ONLY), False)


def test_a_deferred_import_loads_at_its_first_use(tmp_path: Path) -> None:
    """redis-py's ``import jwt`` binds the stand-in; the first attribute read loads PyJWT,
    which then answers (and replaces the stand-in in ``sys.modules``)."""
    loaded = _loaded(
        """
        import sys
        import app
        import redis.auth.token as token

        assert "jwt.api_jwt" not in sys.modules
        signed = token.jwt.encode({"exp": 2_000_000_000, "iat": 1}, "k" * 32, algorithm="HS256")
        assert token.JWToken(signed).get_expires_at_ms() == 2_000_000_000_000
        import jwt
        assert jwt is not token.jwt and jwt.encode is token.jwt.encode
        checked = ["jwt.api_jwt", "cryptography.x509"]
        """,
        tmp_path,
    )
    assert loaded == {"jwt.api_jwt": True, "cryptography.x509": True}
