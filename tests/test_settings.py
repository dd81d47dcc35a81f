from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from app.settings import Settings, async_database_url


class TestEmbeddedDefault:
    def test_needs_no_configuration(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("FORMULA_OPS_DATABASE_URL", "FORMULA_OPS_REDIS_URL", "FORMULA_OPS_STATE_DIR"):
            monkeypatch.delenv(name, raising=False)
        settings = Settings()
        expected = (Path(".formula-ops") / "formula-ops.db").resolve()
        assert settings.database_url_value == f"sqlite+aiosqlite:///{expected}"
        assert settings.uses_sqlite
        assert settings.redis_url is None

    def test_reads_prefixed_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FORMULA_OPS_DATABASE_URL", "postgresql://u:pw@db/ops")
        monkeypatch.setenv("FORMULA_OPS_MAX_BODY_BYTES", "4096")
        settings = Settings()
        assert settings.database_url_value == "postgresql+psycopg://u:pw@db/ops"
        assert settings.max_body_bytes == 4096
        assert not settings.uses_sqlite

    def test_empty_url_means_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FORMULA_OPS_REDIS_URL", "")
        assert Settings().redis_url is None


class TestSecrets:
    def test_urls_with_passwords_never_print(self) -> None:
        settings = Settings(
            database_url=SecretStr("postgresql://ops:hunter2-db@db/ops"),
            redis_url=SecretStr("redis://:hunter2-redis@cache:6379/0"),
        )
        shown = repr(settings) + str(settings) + settings.model_dump_json()
        assert "hunter2" not in shown


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://h/db", "postgresql+psycopg://h/db"),
        ("postgresql://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg2://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_use_async_drivers(given: str, expected: str) -> None:
    assert async_database_url(given) == expected


def test_docker_privileges_are_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOW_HOST_NETWORK", "ALLOW_SENSITIVE_BINDS"):
        monkeypatch.delenv(f"FORMULA_OPS_DOCKER__{name}", raising=False)
    assert not Settings().docker.allow_host_network
    assert not Settings().docker.allow_sensitive_binds
    monkeypatch.setenv("FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK", "true")
    monkeypatch.setenv("FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS", "1")
    assert Settings().docker.allow_host_network
    assert Settings().docker.allow_sensitive_binds
