from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.core.secret_key import load_secret_key
from app.core.settings import Settings, async_database_url
from app.core.state_dir import SharedDirectory


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


class TestSecretKey:
    def test_production_refuses_to_start_without_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("FORMULA_OPS_SECRET_KEY", raising=False)
        monkeypatch.setenv("FORMULA_OPS_ENVIRONMENT", "production")
        with pytest.raises(ValidationError, match="FORMULA_OPS_SECRET_KEY is required"):
            Settings()

    @pytest.mark.parametrize(
        "value",
        [
            "changeme",
            "changeme-changeme-changeme-changeme",
            "please-CHANGE_ME-before-going-live-0123",
            "a" * 64,
            "r4nd0m-but-only-31-characters!!",
        ],
    )
    def test_production_refuses_placeholders_without_echoing_them(
        self, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        monkeypatch.setenv("FORMULA_OPS_SECRET_KEY", value)
        with pytest.raises(ValidationError, match="placeholder") as refused:
            Settings(environment="production")
        assert value not in str(refused.value)

    def test_production_accepts_a_random_one(self) -> None:
        value = secrets.token_urlsafe(48)
        settings = Settings(environment="production", secret_key=SecretStr(value))
        assert load_secret_key(settings) == value.encode()
        assert value not in repr(settings)

    def test_development_generates_one_once_and_keeps_it_private(self, tmp_path: Path) -> None:
        state_dir = tmp_path / "state"
        settings = Settings(state_dir=state_dir)
        first = load_secret_key(settings)
        assert len(first) >= 32
        assert load_secret_key(Settings(state_dir=state_dir)) == first  # a restart reads it
        path = state_dir / "secret.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert sorted(p.name for p in state_dir.iterdir()) == ["secret.key"]
        # Its value, configured on a replica, is the same secret.
        configured = Settings(state_dir=tmp_path / "other", secret_key=SecretStr(path.read_text()))
        assert load_secret_key(configured) == first

    def test_a_shared_directory_is_refused_and_left_as_it_is(self, tmp_path: Path) -> None:
        shared = tmp_path / "tmp"
        shared.mkdir()
        shared.chmod(0o1777)  # like /tmp
        with pytest.raises(SharedDirectory, match="shared directory"):
            load_secret_key(Settings(state_dir=shared))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
        assert list(shared.iterdir()) == []
        # A folder of its own inside it is fine, and the shared one stays open.
        assert load_secret_key(Settings(state_dir=shared / "formula-ops"))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777

    def test_a_configured_one_writes_no_file(self, tmp_path: Path) -> None:
        settings = Settings(state_dir=tmp_path, secret_key=SecretStr("dev"))
        assert load_secret_key(settings) == b"dev"
        assert not (tmp_path / "secret.key").exists()


def test_docker_privileges_are_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALLOW_HOST_NETWORK", "ALLOW_SENSITIVE_BINDS"):
        monkeypatch.delenv(f"FORMULA_OPS_DOCKER__{name}", raising=False)
    assert not Settings().docker.allow_host_network
    assert not Settings().docker.allow_sensitive_binds
    monkeypatch.setenv("FORMULA_OPS_DOCKER__ALLOW_HOST_NETWORK", "true")
    monkeypatch.setenv("FORMULA_OPS_DOCKER__ALLOW_SENSITIVE_BINDS", "1")
    assert Settings().docker.allow_host_network
    assert Settings().docker.allow_sensitive_binds
