"""The process driver on real processes and real ports, and the sample service it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.bootstrap import build_registry
from app.drivers import process as process_module
from app.drivers.base import DRIVERS, DriverError, DriverSettings, ServiceSpec, UnhealthyError
from app.drivers.pool import DriverPool
from app.drivers.process import ProcessDriver
from tests.helpers import free_port

SAMPLE = [
    "{python}",
    "-m",
    "app.embedded.sample_service",
    "--port",
    "{port}",
    "--version",
    "{version}",
]


def _gone(pid: int) -> bool:
    """The pid no longer runs (absent or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text[text.rfind(")") + 2 :].split()[0] in ("Z", "X")


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5, trust_env=False)


@dataclass
class Harness:
    driver: ProcessDriver
    state_dir: Path
    lines: list[str] = field(default_factory=list)
    specs: list[ServiceSpec] = field(default_factory=list)

    async def log(self, line: str) -> None:
        self.lines.append(line)

    def spec(
        self,
        *,
        name: str = "web",
        command: list[str] | None = None,
        port: int | None = None,
        health: bool = True,
        health_timeout: float = 10.0,
        **config: Any,
    ) -> ServiceSpec:
        port = port or free_port()
        spec = ServiceSpec(
            environment="staging",
            name=name,
            driver="process",
            config={
                "command": SAMPLE if command is None else command,
                "port": port,
                "stop_timeout_seconds": 5,
                **config,
            },
            health_url=f"http://127.0.0.1:{port}/health" if health else None,
            health_timeout_seconds=health_timeout,
        )
        self.specs.append(spec)
        return spec


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    state_dir = tmp_path / "state"
    harness = Harness(ProcessDriver(DriverSettings(state_dir)), state_dir)
    try:
        yield harness
    finally:
        for spec in harness.specs:
            with contextlib.suppress(DriverError):
                await harness.driver.stop(spec, harness.log)
        # Whatever the driver may have missed: kill its children and reap them.
        for pid, child in list(process_module._CHILDREN.items()):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                child.wait(timeout=5)
            process_module._CHILDREN.pop(pid, None)


# -- the sample service ---------------------------------------------------------------------


def _start_sample(port: int, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-m", "app.embedded.sample_service", *args],
        env={**os.environ, "PORT": str(port), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            _get(f"http://127.0.0.1:{port}/")
            return child
        except httpx.TransportError:
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                _, stderr = child.communicate()
                raise AssertionError(f"sample service did not start: {stderr!r}") from None
            time.sleep(0.05)


def _stop_sample(child: subprocess.Popen[bytes]) -> bytes:
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=10)
    assert child.returncode == 0
    return stderr


@pytest.mark.slow
def test_sample_service_reports_its_version_and_fails_health_when_broken() -> None:
    port = free_port()
    child = _start_sample(port, env={"SERVICE_VERSION": "1.4.2", "SERVICE_NAME": "shop"})
    try:
        health = _get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "service": "shop", "version": "1.4.2"}
        assert _get(f"http://127.0.0.1:{port}/").json() == {"service": "shop", "version": "1.4.2"}
        version = _get(f"http://127.0.0.1:{port}/version")
        assert version.text.strip() == "1.4.2"
        assert version.headers["content-type"].startswith("text/plain")
        missing = _get(f"http://127.0.0.1:{port}/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "not found"
    finally:
        stderr = _stop_sample(child)
    assert b"GET /health 200" in stderr

    port = free_port()  # arguments override the environment
    child = _start_sample(port, "--port", str(port), "--version", "2.0.0-broken", env={"PORT": "1"})
    try:
        health = _get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 503
        assert health.json() == {"status": "broken", "service": "sample", "version": "2.0.0-broken"}
    finally:
        _stop_sample(child)


# -- deployments ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_deploy_replace_redeploy_and_worker_restart(harness: Harness) -> None:
    driver = harness.driver
    spec = harness.spec()
    assert spec.health_url is not None
    assert await driver.current(spec) is None

    first = await driver.deploy(spec, "1.0.0", harness.log)
    assert (first.version, first.previous_version, first.changed) == ("1.0.0", None, True)
    first_pid = first.details["pid"]
    current = await driver.current(spec)
    assert current is not None
    assert (current.version, current.ident) == ("1.0.0", str(first_pid))
    health = await driver.health(spec)
    assert health.healthy
    assert health.version == "1.0.0"
    assert f"started pid {first_pid}" in first.output
    assert any(line.startswith("healthy: GET ") for line in harness.lines)

    second = await driver.deploy(spec, "1.1.0", harness.log)
    assert (second.version, second.previous_version, second.changed) == ("1.1.0", "1.0.0", True)
    second_pid = second.details["pid"]
    assert second_pid != first_pid
    assert _gone(first_pid)
    assert f"stopping pid {first_pid} (1.0.0)" in harness.lines
    assert _get(spec.health_url).json()["version"] == "1.1.0"

    again = await driver.deploy(spec, "1.1.0", harness.log)
    assert again.changed is False
    assert again.details["pid"] == second_pid

    # A restarted worker has a new driver; the state on disk tells it what runs.
    pool = DriverPool(build_registry()[DRIVERS], DriverSettings(harness.state_dir))
    restarted = pool.get("process")
    current = await restarted.current(spec)
    assert current is not None
    assert (current.version, current.ident) == ("1.1.0", str(second_pid))
    assert (await restarted.deploy(spec, "1.1.0", harness.log)).changed is False

    state_file = harness.state_dir / "processes" / "staging" / "web.json"
    state = json.loads(state_file.read_text())
    assert state["pid"] == second_pid
    assert state["version"] == "1.1.0"
    assert isinstance(state["start_time"], int)
    assert "1.1.0 listening" in (state_file.with_suffix(".log")).read_text()


@pytest.mark.slow
async def test_broken_version_raises_unhealthy_and_a_rollback_restores(harness: Harness) -> None:
    driver = harness.driver
    spec = harness.spec(health_timeout=1.5)
    good = await driver.deploy(spec, "1.1.0", harness.log)

    with pytest.raises(UnhealthyError) as failure:
        await driver.deploy(spec, "1.2.0-broken", harness.log)
    message = str(failure.value)
    assert "1.2.0-broken not healthy" in message
    assert "-> 503" in message
    assert "GET /health 503" in message  # the last lines of its log
    assert _gone(good.details["pid"])
    current = await driver.current(spec)
    assert current is not None
    assert current.version == "1.2.0-broken"  # still recorded: the rollback replaces it
    assert not (await driver.health(spec)).healthy

    rollback = await driver.deploy(spec, "1.1.0", harness.log)
    assert (rollback.previous_version, rollback.changed) == ("1.2.0-broken", True)
    assert _gone(int(current.ident))
    assert (await driver.health(spec)).version == "1.1.0"


@pytest.mark.slow
async def test_a_process_exiting_at_start_fails_fast_with_its_output(harness: Harness) -> None:
    spec = harness.spec(
        command=["{python}", "-c", "import sys; print('cannot open config'); sys.exit(3)"],
        health_timeout=20,
    )
    started = time.monotonic()
    with pytest.raises(UnhealthyError) as failure:
        await harness.driver.deploy(spec, "1.0.0", harness.log)
    assert time.monotonic() - started < 10
    assert "exited with code 3" in str(failure.value)
    assert "cannot open config" in str(failure.value)
    assert await harness.driver.current(spec) is None


@pytest.mark.slow
async def test_killed_from_outside_is_not_current_and_stop_stops(harness: Harness) -> None:
    driver = harness.driver
    web, api = harness.spec(name="web"), harness.spec(name="api")
    killed = (await driver.deploy(web, "1.0.0", harness.log)).details["pid"]
    stopped = (await driver.deploy(api, "1.0.0", harness.log)).details["pid"]

    os.killpg(killed, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while await driver.current(web) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    health = await driver.health(web)
    assert (health.healthy, health.detail) == (False, "not running")

    await driver.stop(api, harness.log)
    assert _gone(stopped)
    assert await driver.current(api) is None
    assert not (harness.state_dir / "processes" / "staging" / "api.json").exists()
    await driver.stop(api, harness.log)  # nothing runs: no error
    assert harness.lines[-1] == "nothing runs"


@pytest.mark.slow
async def test_concurrent_deploys_of_a_service_take_turns(harness: Harness) -> None:
    spec = harness.spec()
    results = await asyncio.gather(
        harness.driver.deploy(spec, "1.0.0", harness.log),
        harness.driver.deploy(spec, "1.0.0", harness.log),
    )
    assert sorted(result.changed for result in results) == [False, True]
    assert results[0].details["pid"] == results[1].details["pid"]
    assert "waiting for another operation on this service to finish" in harness.lines


@pytest.mark.slow
async def test_a_process_ignoring_sigterm_is_killed_after_the_stop_timeout(
    harness: Harness,
) -> None:
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"
    spec = harness.spec(
        name="stubborn",
        command=["{python}", "-c", stubborn],
        health=False,
        stop_timeout_seconds=0.5,
    )
    pid = (await harness.driver.deploy(spec, "1.0.0", harness.log)).details["pid"]
    await harness.driver.stop(spec, harness.log)
    assert _gone(pid)
    assert f"pid {pid} still runs after 0.5 s: SIGKILL" in harness.lines


def _orphan_sleep() -> tuple[int, int]:
    """A ``sleep`` leading its own process group whose parent already exited (as a process
    left by an earlier worker is): its pid and start time."""
    launcher = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '60'], start_new_session=True,"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", launcher],
        capture_output=True,
        check=True,
        timeout=10,
    )
    pid = int(done.stdout)
    stat = Path(f"/proc/{pid}/stat").read_text()
    return pid, int(stat[stat.rfind(")") + 2 :].split()[19])


@pytest.mark.slow
async def test_a_process_started_by_an_earlier_worker_is_found_and_stopped(
    harness: Harness,
) -> None:
    """Not a child of this worker: only /proc tells it runs; a reused pid does not count."""
    spec = harness.spec(name="legacy", health=False)
    pid, start_time = _orphan_sleep()
    try:
        state_file = harness.state_dir / "processes" / "staging" / "legacy.json"
        state_file.parent.mkdir(parents=True)
        record = {
            "pid": pid,
            "version": "0.9.0",
            "argv": ["sleep", "60"],
            "started_at": "2024-01-01T00:00:00+00:00",
            "start_time": start_time + 1,  # another process had this pid
        }
        state_file.write_text(json.dumps(record))
        assert await harness.driver.current(spec) is None

        state_file.write_text(json.dumps({**record, "start_time": start_time}))
        current = await harness.driver.current(spec)
        assert current is not None
        assert (current.version, current.ident) == ("0.9.0", str(pid))

        await harness.driver.stop(spec, harness.log)
        assert _gone(pid)
        assert "stopped pid" in harness.lines[-1]
        assert not state_file.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
async def test_placeholders_are_literal_and_never_reach_a_shell(
    harness: Harness, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    seen = tmp_path / "seen.json"
    script = (
        "import json, os, sys, time\n"
        "keys = ('SERVICE_VERSION', 'SERVICE_NAME', 'SERVICE_ENVIRONMENT', 'PORT', 'GREETING',"
        " 'FORMULA_OPS_SECRET_FOR_TEST')\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': {{k: os.environ.get(k) for k in keys}}}},"
        f" open({str(seen)!r}, 'w'))\n"
        "time.sleep(60)\n"
    )
    command = [
        "{python}",
        "-c",
        script,
        f"$(touch {marker})",
        f"; touch {marker}",
        "{version}/{service}/{environment}/{port}",
        "{unknown} {0} {version!r} {{version}}",
    ]
    spec = harness.spec(
        name="argv", command=command, health=False, env={"GREETING": "hi {service} {version}"}
    )
    port = spec.config["port"]
    os.environ["FORMULA_OPS_SECRET_FOR_TEST"] = "s3cret"
    try:
        result = await harness.driver.deploy(spec, "2.0-{service}", harness.log)
    finally:
        del os.environ["FORMULA_OPS_SECRET_FOR_TEST"]
    assert result.changed
    deadline = time.monotonic() + 10
    while not seen.exists() or not seen.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    observed = json.loads(seen.read_text())
    assert observed["argv"] == [
        f"$(touch {marker})",
        f"; touch {marker}",
        f"2.0-{{service}}/argv/staging/{port}",
        "{unknown} {0} {version!r} {2.0-{service}}",
    ]
    assert observed["env"] == {
        "SERVICE_VERSION": "2.0-{service}",
        "SERVICE_NAME": "argv",
        "SERVICE_ENVIRONMENT": "staging",
        "PORT": str(port),
        "GREETING": "hi argv 2.0-{service}",
        "FORMULA_OPS_SECRET_FOR_TEST": None,
    }
    assert not marker.exists()


# -- pull and config ------------------------------------------------------------------------


async def test_pull_checks_the_executable(harness: Harness) -> None:
    text = await harness.driver.pull(harness.spec(), "1.0.0", harness.log)
    assert text == f"{sys.executable} is an executable file"  # said once, not "X found: X"
    by_name = await harness.driver.pull(
        harness.spec(command=["sh", "-c", "true"]), "1", harness.log
    )
    assert re.fullmatch(r"sh resolves to /\S+/sh", by_name), by_name
    with pytest.raises(DriverError, match="not found"):
        await harness.driver.pull(
            harness.spec(command=["no-such-binary-formula-ops"]), "1.0.0", harness.log
        )
    with pytest.raises(DriverError, match="not an executable"):
        await harness.driver.pull(
            harness.spec(command=["/nonexistent/bin/{service}"]), "1.0.0", harness.log
        )


def test_validate_config_normalises() -> None:
    driver = ProcessDriver(DriverSettings(Path("/nonexistent")))
    assert driver.validate_config({"command": ["{python}", "-V"]}) == {
        "command": ["{python}", "-V"],
        "env": {},
        "cwd": None,
        "port": None,
        "stop_timeout_seconds": 10.0,
    }


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({}, "command"),
        ({"command": []}, "command"),
        ({"command": "python -m app.embedded.sample_service"}, "command"),
        ({"command": [""]}, "command.0"),
        ({"command": ["x"], "shell": True}, "shell"),
        ({"command": ["x"], "port": 0}, "port"),
        ({"command": ["x"], "port": 70000}, "port"),
        ({"command": ["x", "--port", "{port}"]}, "{port}"),
        ({"command": ["x"], "env": {"A": 1}}, "env.A"),
        ({"command": ["x"], "env": {"BAD NAME": "1"}}, "BAD NAME"),
        ({"command": ["x"], "stop_timeout_seconds": 0}, "stop_timeout_seconds"),
    ],
)
def test_invalid_configs_are_refused(config: dict[str, Any], fragment: str) -> None:
    driver = ProcessDriver(DriverSettings(Path("/nonexistent")))
    with pytest.raises(ValueError, match="invalid process config") as refused:
        driver.validate_config(config)
    assert fragment in str(refused.value)


async def test_operations_refuse_an_invalid_config_and_unsafe_names(harness: Harness) -> None:
    spec = harness.spec(command=[])
    with pytest.raises(DriverError, match="invalid process config"):
        await harness.driver.deploy(spec, "1.0.0", harness.log)
    harness.specs.remove(spec)
    for name in ("../etc", "a/b", ""):
        unsafe = ServiceSpec("staging", name, "process", {"command": ["x"]})
        with pytest.raises(DriverError, match="cannot name a state file"):
            await harness.driver.current(unsafe)
