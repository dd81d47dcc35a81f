"""Scripts use a client generated from the committed OpenAPI document: it has a typed
deployment request, and it deploys and reads the evidence against a real
``formula-ops serve`` (embedded SQLite + Redis, the seeded ``local`` environment)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.serve_process import FORMULA_OPS
from tests.e2e.test_cli_deploy import backend_version
from tests.e2e.test_cli_runs import Server, sample_ports, serve_with_cli
from tests.helpers import REPO_ROOT
from tests.test_readme import README

pytestmark = pytest.mark.slow
GENERATOR = FORMULA_OPS.parent / "openapi-python-client"
PACKAGE = "formula_ops_client"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client `openapi-python-client` generates from openapi/openapi.json, imported.
    No formatter runs on it (`post_hooks: []`), and nothing is fetched."""
    workdir = tmp_path_factory.mktemp("generated-client")
    config = workdir / "config.yaml"
    config.write_text("post_hooks: []\n")
    output = workdir / "client"
    generated = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(REPO_ROOT / "openapi" / "openapi.json"),
            "--output-path",
            str(output),
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(output))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(output))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_the_deployment_request_is_typed(client_package: ModuleType) -> None:
    """`create_deployment` takes the two named request models, never an untyped body."""
    create = _module("api.deployments.create_deployment")
    models = _module("models")
    for function in (create.sync_detailed, create.sync, create.asyncio_detailed):
        body = typing.get_type_hints(function)["body"]
        assert body is not Any, f"{function.__qualname__} takes an untyped body"
        assert set(typing.get_args(body)) == {
            models.DeploymentCreate,
            models.MultiServiceDeploymentCreate,
        }
    single = models.DeploymentCreate(environment="local", service="backend", version="1.0.0")
    assert {k: single.to_dict()[k] for k in ("environment", "service", "version")} == {
        "environment": "local",
        "service": "backend",
        "version": "1.0.0",
    }
    assert "services" not in single.to_dict()
    several = models.MultiServiceDeploymentCreate(
        environment="local", services=[models.ServiceVersion(name="backend", version="1.0.0")]
    )
    assert several.to_dict()["services"] == [{"name": "backend", "version": "1.0.0"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_with_cli(tmp_path_factory.mktemp("serve-client"), **sample_ports())


def test_deploy_and_read_the_evidence(client_package: ModuleType, server: Server) -> None:
    models = _module("models")
    create = _module("api.deployments.create_deployment")
    evidence = _module("api.deployments.get_deployment_evidence")
    client = client_package.AuthenticatedClient(
        base_url=server.url, token=server.token, raise_on_unexpected_status=True, timeout=150
    )
    body = models.DeploymentCreate(
        environment="local",
        service="backend",
        version="1.4.2",
        description="from the generated client",
        checklist=[models.DeploymentCreateChecklistItem.TESTS_PASSED],
    )
    key = f"generated-client-{uuid.uuid4()}"
    with client:
        answer = create.sync_detailed(
            client=client, body=body, idempotency_key=key, prefer="wait=120"
        )
        assert answer.status_code == 201, answer.content
        deployment = answer.parsed
        assert isinstance(deployment, models.DeploymentOut)
        assert deployment.status == models.RunStatus.SUCCESS, deployment.failure
        assert [(s.name, s.version) for s in deployment.services] == [("backend", "1.4.2")]

        record = evidence.sync(client=client, deployment_id=deployment.id)
        assert isinstance(record, models.Evidence)
        assert record.deployment_id == deployment.id
        assert record.status == models.RunStatus.SUCCESS
        assert record.sha256
        assert record.steps

        replayed = create.sync_detailed(
            client=client, body=body, idempotency_key=key, prefer="wait=120"
        )
        assert replayed.parsed.id == deployment.id
    assert backend_version(server) == "1.4.2"


README_SCRIPT = re.compile(r"^```python\n(# deploy\.py .*?)^```$", re.MULTILINE | re.DOTALL)


def test_the_readme_script_deploys_waits_and_says_how_it_ended(
    client_package: ModuleType, server: Server, tmp_path: Path
) -> None:
    """The README's `deploy.py`, as written, with the generated client on its path: exit 0
    on success, 1 when rolled back, and a one-line refusal (exit 1) for a pinned version."""
    found = README_SCRIPT.search(README.read_text())
    assert found, "README.md has no `deploy.py` block"
    script = tmp_path / "deploy.py"
    script.write_text(found.group(1))
    package_dir = Path(next(iter(client_package.__path__))).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORMULA_OPS_")}
    env |= {
        "PYTHONPATH": str(package_dir),
        "FORMULA_OPS_PORT": str(server.port),
        "FORMULA_OPS_TOKEN": server.token,
    }

    def deploy(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), version],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    ok = deploy("3.0.0")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert " success" in ok.stdout
    assert backend_version(server) == "3.0.0"

    broken = deploy("3.1.0-broken")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert " rolled_back " in broken.stdout, broken.stdout

    pinned = deploy("3.1.0-broken")
    assert pinned.returncode == 1, pinned.stdout + pinned.stderr
    assert pinned.stderr.startswith("refused: Version pinned: "), pinned.stderr
    assert "Traceback" not in pinned.stderr
