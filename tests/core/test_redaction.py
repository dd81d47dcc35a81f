"""The secrets rule (:mod:`app.core.redaction`) and what it guards: the logs, the environment
of started programs, the state directory's modes, the parameters of failing SQL."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from app.auth.roles import Role
from app.core.child_env import child_env
from app.core.context import AppContext
from app.core.db import create_engine
from app.core.logging import log_handler
from app.core.redaction import (
    REDACTED,
    Scrubber,
    redact_argv,
    redact_text,
    redact_value,
    secrets_in,
)
from app.core.settings import Settings
from app.core.state_dir import secure_state_dir
from app.environments.models import Service
from app.runs.actions import ShellParams, StepContext, shell
from app.runs.models import StepStatus
from tests.factories import issue_token

CANARY = "cnry-6f1d2a9b"


class TestText:
    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("http://admin:pw@host/x", "http://[redacted]@host/x"),
            ("postgresql://u:p@ss@db:5432/app", "postgresql://[redacted]@db:5432/app"),
            (
                "git clone https://oauth2:glpat@gitlab/x.git",
                "git clone https://[redacted]@gitlab/x.git",
            ),
            (
                "GET http://h/x?access_token=abc&page=2",
                "GET http://h/x?access_token=[redacted]&page=2",
            ),
            ("run --password=hunter2 -v", "run --password=[redacted] -v"),
            ("run --db-password hunter2 -v", "run --db-password [redacted] -v"),
            (
                "--api-key=k --client-secret s --auth-token t",
                "--api-key=[redacted] --client-secret [redacted] --auth-token [redacted]",
            ),
            ("Authorization: Bearer abc.def", "Authorization: [redacted]"),
            ("proxy-authorization:Basic dTpw\nnext", "proxy-authorization:[redacted]\nnext"),
            ("curl -H 'X-Api-Key: k1'", "curl -H 'X-Api-Key: [redacted]"),
            ("token is Bearer abcdefghij", "token is Bearer [redacted]"),
            (
                "DB_PASSWORD=x API_TOKEN=y PORT=8080",
                "DB_PASSWORD=[redacted] API_TOKEN=[redacted] PORT=8080",
            ),
            ('{"password": "x", "user": "u"}', '{"password": "[redacted]", "user": "u"}'),
            ("made by fops_abc_123 and whsec_zzz", "made by [redacted] and [redacted]"),
            ("redis-server --requirepass s3", "redis-server --requirepass [redacted]"),
        ],
    )
    def test_secrets_are_hidden(self, raw: str, shown: str) -> None:
        assert redact_text(raw) == shown
        assert redact_text(shown) == shown  # applying it again changes nothing

    @pytest.mark.parametrize(
        "plain",
        [
            "GET http://127.0.0.1:8080/health -> 200 in 3.1 ms",
            "deploy backend: 1.0.0 -> 1.1.0",
            "[x] Code review (required)\n[ ] Tests passed",
            "run -p 8080 --port 9000 --no-password-prompt",
            "token.create",
            "mail me at ops@example.com",
        ],
    )
    def test_ordinary_text_is_left_alone(self, plain: str) -> None:
        assert redact_text(plain) == plain


class TestStructures:
    def test_argv(self) -> None:
        argv = [
            "p",
            "--password",
            "x",
            "--token=y",
            "-p",
            "8080",
            "--secret",
            "--next",
            "u://a:b@h",
        ]
        assert redact_argv(argv) == [
            "p", "--password", REDACTED, "--token=" + REDACTED, "-p", "8080",
            "--secret", "--next", "u://[redacted]@h",
        ]  # fmt: skip

    def test_value(self) -> None:
        value = {
            "config": {"env": {"PORT": "8080", "DB": "x"}, "command": ["a", "--api-key", "k"]},
            "headers": {"Authorization": "Bearer t", "Accept": "text/html", "Cookie": "s=1"},
            "url": "https://u:p@h/",
            "password": "p",
            "empty_token": None,
            "items": [{"client_secret": "s"}, 3, True],
        }
        assert redact_value(value) == {
            "config": {
                "env": {"PORT": REDACTED, "DB": REDACTED},
                "command": ["a", "--api-key", REDACTED],
            },
            "headers": {"Authorization": REDACTED, "Accept": "text/html", "Cookie": REDACTED},
            "url": "https://[redacted]@h/",
            "password": REDACTED,
            "empty_token": None,
            "items": [{"client_secret": REDACTED}, 3, True],
        }  # fmt: skip

    def test_query_parameters_naming_a_secret_with_fewer_letters(self) -> None:
        url = "https://h/x?key=google-key-1&sv=2024&sig=azure-sas-1&code=function-key-1&zip=1"
        assert redact_text(url) == (
            f"https://h/x?key={REDACTED}&sv=2024&sig={REDACTED}&code={REDACTED}&zip=1"
        )
        assert secrets_in({"url": url}) >= {"google-key-1", "azure-sas-1", "function-key-1"}

    def test_flags_naming_a_secret_with_fewer_letters(self) -> None:
        argv = ["redis-cli", "--pass", "redis-pw", "--auth=u:auth-pw", "--key", "api-key-1"]
        assert redact_argv(argv) == [
            "redis-cli", "--pass", REDACTED, "--auth=" + REDACTED, "--key", REDACTED,
        ]  # fmt: skip
        assert secrets_in({"argv": argv}) >= {"redis-pw", "u:auth-pw", "api-key-1"}
        assert redact_text("started: tool --pass redis-pw") == f"started: tool --pass {REDACTED}"

    def test_credential_headers_without_a_secret_word_in_their_name(self) -> None:
        headers = {
            "X-Auth-Key": "cloudflare-key",
            "X-Auth": "plain-credential",
            "Ocp-Apim-Subscription-Key": "azure-key",
            "x-functions-key": "function-key",
            "Accept": "application/json",
            "Keep-Alive": "timeout=5",
        }
        assert redact_value({"headers": headers})["headers"] == {
            "X-Auth-Key": REDACTED,
            "X-Auth": REDACTED,
            "Ocp-Apim-Subscription-Key": REDACTED,
            "x-functions-key": REDACTED,
            "Accept": "application/json",
            "Keep-Alive": "timeout=5",
        }
        assert secrets_in({"headers": headers}) >= {"cloudflare-key", "azure-key", "function-key"}

    def test_known_values_are_scrubbed_from_output(self) -> None:
        params = {
            "argv": ["cmd", "--password", "pa55word!"],
            "env": {"DSN": "plain-dsn-value", "SHORT": "abc"},
            "headers": {"Authorization": "Bearer tok-123456"},
            "url": "http://user:urlsecret@h/",
        }
        assert secrets_in(params) >= {"pa55word!", "plain-dsn-value", "tok-123456", "urlsecret"}
        scrub = Scrubber.of(params)
        output = "dsn=plain-dsn-value pw pa55word! tok-123456 urlsecret abc"
        assert scrub.text(output) == "dsn=[redacted] pw [redacted] [redacted] [redacted] abc"
        assert scrub.value({"url": "see plain-dsn-value"}) == {"url": "see [redacted]"}


def test_the_log_handler_redacts_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler := log_handler(stream))
    try:
        logger.warning("GET %s failed", f"http://u:{CANARY}@h/")
        try:
            raise RuntimeError(f"--password={CANARY}")
        except RuntimeError:
            logger.exception("with traceback")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "GET http://[redacted]@h/ failed" in written
    assert "RuntimeError: --password=[redacted]" in written
    assert CANARY not in written


class TestChildEnvironment:
    def test_allowlist_plus_declared(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FORMULA_OPS_DATABASE_URL", CANARY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
        monkeypatch.setenv("LC_ALL", "C.UTF-8")
        env = child_env({"APP_MODE": "x", "FORMULA_OPS_TOKEN": CANARY})
        assert CANARY not in env.values()
        assert env["APP_MODE"] == "x"
        assert env["LC_ALL"] == "C.UTF-8"
        assert env["PATH"]
        assert set(env) <= {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "APP_MODE"} | {
            name for name in env if name.startswith("LC_")
        }

    async def test_a_shell_step_sees_only_the_allowlist(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FORMULA_OPS_REDIS_URL", CANARY)
        monkeypatch.setenv("UNRELATED_SECRET", CANARY)
        lines: list[str] = []

        async def log(line: str) -> None:
            lines.append(line)

        params = ShellParams(
            argv=[sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
            env={"DECLARED": "yes"},
        )
        # The shell action reads nothing of the application context.
        outcome = await shell(params, StepContext(context=None, log=log))  # type: ignore[arg-type]
        assert outcome.status == StepStatus.SUCCESS, outcome.error
        seen: dict[str, Any] = json.loads(outcome.output)
        assert seen["DECLARED"] == "yes"
        assert CANARY not in outcome.output
        assert not [name for name in seen if name.startswith("FORMULA_OPS_")]

    async def test_shell_log_events_start_at_a_line(self) -> None:
        """Known secrets are scrubbed per log event: an event never starts mid-line."""
        events: list[str] = []

        async def log(line: str) -> None:
            events.append(line)

        script = (
            "import time\n"
            "for i in range(3000):\n"  # whole lines per write: a pause never splits one
            "    print(f'line {i:04d} {\"x\" * 40}', flush=True)\n"
            "    if i % 500 == 0: time.sleep(0.6)\n"
        )
        params = ShellParams(argv=[sys.executable, "-c", script])
        outcome = await shell(params, StepContext(context=None, log=log))  # type: ignore[arg-type]
        assert outcome.status == StepStatus.SUCCESS, outcome.error
        assert len(events) > 1
        assert all(event.startswith("line ") for event in events), [e[:20] for e in events]


class TestStateDirectory:
    def test_created_private_and_an_old_one_tightened(self, tmp_path: Path) -> None:
        state = tmp_path / "state"
        (state / "processes" / "staging").mkdir(parents=True, mode=0o755)
        for path in (state, state / "processes", state / "processes" / "staging"):
            path.chmod(0o755)
        old = [state / "formula-ops.db", state / "redis.pid", state / "processes/staging/a.log"]
        for path in old:
            path.write_text("")
            path.chmod(0o644)
        other = state / "someone-elses.txt"
        other.write_text("")
        other.chmod(0o644)
        secure_state_dir(state)
        assert _mode(state) == 0o700
        assert _mode(state / "processes" / "staging") == 0o700
        assert [_mode(p) for p in old] == [0o600] * 3
        assert _mode(other) == 0o644  # not ours: untouched

    async def test_the_sqlite_files_are_0600(self, tmp_path: Path) -> None:
        settings = Settings(state_dir=tmp_path / "new" / "state")
        engine = create_engine(settings)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("PRAGMA journal_mode=WAL"))
                await conn.execute(text("CREATE TABLE t (x TEXT)"))
                await conn.execute(text("INSERT INTO t VALUES ('x')"))
            files = sorted(settings.state_dir.iterdir())
            assert [p.name for p in files] == [
                "formula-ops.db", "formula-ops.db-shm", "formula-ops.db-wal",
            ]  # fmt: skip
            assert [_mode(p) for p in files] == [0o600] * 3
            assert _mode(settings.state_dir) == 0o700
            assert _mode(settings.state_dir.parent) == 0o700
        finally:
            await engine.dispose()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_a_failing_statement_shows_no_parameter_values(
    context: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    with pytest.raises(DBAPIError) as caught:
        async with context.engine.connect() as conn:
            await conn.execute(text("SELECT x FROM no_such_table WHERE x = :p"), {"p": CANARY})
    assert "parameters hidden" in str(caught.value)
    assert CANARY not in str(caught.value)
    assert CANARY not in caplog.text


async def test_an_invalid_step_names_where_it_is_wrong_never_the_value(
    context: AppContext, client: httpx.AsyncClient
) -> None:
    """A service stored in a shape its steps no longer accept (written by an earlier
    version): the deployer's 422 says where the step is wrong, without the value —
    pydantic's own message quotes the input."""
    admin = await issue_token(context, Role.ADMIN)
    env = await client.put("/v1/environments/staging", json={}, headers=admin.headers)
    assert env.status_code == 201, env.text
    service = {
        "driver": "process",
        "config": {"command": ["{python}", "-c", "pass"]},
        "smoke_tests": [{"name": "home", "type": "http", "url": "http://127.0.0.1:9/"}],
    }
    put = await client.put(
        "/v1/environments/staging/services/api", json=service, headers=admin.headers
    )
    assert put.status_code == 201, put.text
    async with context.unit_of_work() as uow:  # as an earlier version stored it
        test = {**service["smoke_tests"][0], "headers": {"Authorization": [f"Bearer {CANARY}"]}}
        await uow.session.execute(
            update(Service).where(Service.name == "api").values(smoke_tests=[test])
        )
    deployer = await issue_token(context, Role.DEPLOYER)
    for dry_run in (True, False):
        response = await client.post(
            "/v1/deployments",
            json={"environment": "staging", "service": "api", "version": "1", "dry_run": dry_run},
            headers=deployer.headers,
        )
        assert response.status_code == 422, response.text
        assert "headers.Authorization" in response.text
        assert CANARY not in response.text


class TestRuleGuards:
    """:func:`redact_text` skips a rule on an ASCII text that lacks the literals every match
    of the rule contains; it must answer exactly what running every rule answers."""

    FRAGMENTS = (
        "password",
        "PassWord",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "Api-Key",
        "access-key",
        "private_key",
        "client-key",
        "credential",
        "Authorization",
        "proxy-authorization",
        "cookie",
        "Set-Cookie",
        "x-auth-token",
        "private-token",
        "session_id",
        "requirepass",
        "masterauth",
        "sig",
        "code",
        "auth",
        "pass",
        "key",
        "Bearer",
        "bearer",
        "fops",
        "whsec",
        "FOPS",
        "-----BEGIN ",
        "RSA ",
        "PRIVATE KEY-----",
        "-----END ",
        "postgres://",
        "user",
        "@",
        "://",
        "?",
        "&",
        ";",
        "=",
        ":",
        ": ",
        "-",
        "--",
        " ",
        "\t",
        "\n",
        "\r\n",
        "'",
        '"',
        ",",
        "}",
        "_",
        ".",
        "/",
        "#",
        "x",
        "0",
        "abcdefgh12345678",
        "[redacted]",
        "\u017fecret",
        "\u212aey",
        "İ",
        "é",
    )

    @staticmethod
    def every_rule(text: str) -> str:
        from app.core.redaction import _TEXT_RULES

        for pattern, replacement, _ in _TEXT_RULES:
            text = pattern.sub(replacement, text)
        return text

    @staticmethod
    def spelled(pattern: str) -> set[str]:
        """Every text a pattern made of literals, alternatives, character classes and
        optional parts matches (the word lists are such patterns)."""
        import re._constants as c
        import re._parser as p

        def walk(items: Any) -> set[str]:
            texts = {""}
            for op, av in items:
                if op is c.LITERAL:
                    options = {chr(av)}
                elif op is c.IN:
                    assert all(kind is c.LITERAL for kind, _ in av), av
                    options = {chr(code) for _, code in av}
                elif op is c.BRANCH:
                    options = set().union(*(walk(branch) for branch in av[1]))
                elif op is c.SUBPATTERN:
                    options = walk(av[-1])
                elif op is c.MAX_REPEAT and av[:2] == (0, 1):
                    options = walk(av[2]) | {""}
                else:
                    raise AssertionError(f"cannot spell {op} in {pattern}")
                texts = {t + o for t in texts for o in options}
            return texts

        return walk(p.parse(pattern))

    def test_every_secret_word_holds_a_literal_of_its_rules_guard(self) -> None:
        """A word added to a list without a literal of the guard would be skipped silently
        on ASCII texts: every word each pattern matches is spelled out and checked."""
        from app.core import redaction as r

        guards = {pattern.pattern: guard for pattern, _, guard in r._TEXT_RULES}
        lists = {r._WORDS: 0, r._FLAG_WORDS: 0, r._QUERY_WORDS: 0, r._HEADERS: 0}
        for words in lists:
            spelled = self.spelled(words)
            assert "cookie" in spelled
            assert len(spelled) > 10
            for pattern, guard in guards.items():
                if f"(?:{words})" not in pattern:
                    continue
                lists[words] += 1
                for word in spelled:
                    for group in guard:
                        if any(literal.isalpha() for literal in group):
                            assert any(literal in word.lower() for literal in group), (
                                word,
                                group,
                            )
        assert lists == {r._WORDS: 1, r._FLAG_WORDS: 1, r._QUERY_WORDS: 1, r._HEADERS: 1}

    def test_random_texts_redact_as_with_every_rule(self) -> None:
        import random

        chance = random.Random(15)
        for _ in range(20_000):
            text = "".join(chance.choices(self.FRAGMENTS, k=chance.randint(1, 12)))
            assert redact_text(text) == self.every_rule(text), repr(text)

    @pytest.mark.parametrize(
        "text",
        [
            "connect postgres://app:hunter2@db:5432/app?sslmode=require&password=x",
            "Authorization: Bearer abcdefgh12345678",
            "curl -H 'X-Api-Key: k123' --password hunter2 https://h/?sig=abc&x=1",
            "ALTER ROLE app PASSWORD 'its'",
            "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----",
            "token fops_abc_DEF-123 and whsec_XYZ",
            "DB_PASSWORD=hunter2 REDIS_AUTH: s3cr3t",
            "\u212aEY=hunter2",  # the Kelvin sign: not ASCII, every rule runs
            "\u017fecret: hunter2",
            "step ended: success in 0 ms",
        ],
    )
    def test_known_texts(self, text: str) -> None:
        assert redact_text(text) == self.every_rule(text)
