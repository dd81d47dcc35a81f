"""S3 servers for the backup storage tests: an emulator (moto) and a real one (Ceph's RADOS
Gateway, started privately).

:func:`moto_s3` is moto's S3 *emulator* in a thread: fast, but it is not S3; what it
accepts proves little about a real server (it checks no signatures, for one).

:func:`rgw_s3` is a real S3 implementation: a single-node Ceph cluster (one monitor, one
OSD keeping its data in memory, one RADOS Gateway) started from nothing in a temporary
folder, with its own fsid and free loopback ports, so that two test runs on one machine
share nothing. It is stopped at the end of the session (each daemon is the leader of its
own process group, which is killed). When the Ceph binaries are missing the fixture skips,
and fails when ``CI=true``: ``.ci/run`` installs them (Debian packages ``ceph-mon
ceph-osd radosgw ceph-common``).

Both yield an :class:`S3Server`; tests pass its credentials to the storage explicitly, so
nothing global (``AWS_*`` variables) is set. Import them in a ``conftest.py``::

    from tests.backups.s3_server import moto_s3, rgw_s3  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from app.backups.storage_s3 import S3Storage

REGION = "us-east-1"
RGW_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "ceph", "radosgw-admin", "monmaptool")
RGW_STARTUP_TIMEOUT = 90.0  # the whole start, from nothing to a user that can sign in
RGW_ACCESS_KEY = "FOTESTACCESSKEY00001"
RGW_SECRET_KEY = "fo-test-secret-key-0123456789abcdefghijkl"


@dataclass
class S3Server:
    """An S3 endpoint and the credentials of a user of it."""

    kind: str  # "moto" (an emulator) or "rgw" (Ceph RADOS Gateway, a real S3)
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION
    _client: Any = field(default=None, repr=False, compare=False)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client of this server (path-style addressing); the default one is
        made once."""
        if not config and self._client is not None:
            return self._client
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )
        if not config:
            self._client = client
        return client

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a new unique name unless given) and return its name."""
        bucket = name or f"fo-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def storage(self, url: str, **kwargs: Any) -> S3Storage:
        """The storage of ``s3://bucket[/prefix]`` on this server with this user's keys."""
        options: dict[str, Any] = {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            **kwargs,
        }
        return S3Storage.from_url(url, endpoint_url=self.endpoint_url, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- moto (an emulator) ------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 EMULATOR (not a real S3) on a free loopback port, for the session.
    It accepts any credentials; tests that need a real signature check use :func:`rgw_s3`."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server("moto", f"http://127.0.0.1:{port}", "moto-access", "moto-secret")
    finally:
        server.stop()


# -- Ceph RADOS Gateway (a real S3) ------------------------------------------------------


class RgwError(RuntimeError):
    """The gateway could not be started."""


def rgw_missing() -> list[str]:
    return [name for name in RGW_BINARIES if shutil.which(name) is None]


def require_rgw() -> None:
    """Skip when the Ceph binaries are missing; fail instead in CI (``CI=true``)."""
    missing = rgw_missing()
    if not missing:
        return
    message = "Ceph RADOS Gateway unavailable, missing: " + ", ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            message + " (.ci/run installs ceph-mon ceph-osd radosgw ceph-common)", pytrace=False
        )
    pytest.skip(message)


class RadosGateway:
    """A private single-node Ceph cluster with a RADOS Gateway; ``start`` / ``close``."""

    def __init__(self) -> None:
        self.state: Path | None = None
        self.mon_port: int | None = None
        self.port: int | None = None
        self._daemons: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._env: dict[str, str] = {}

    @property
    def endpoint_url(self) -> str:
        assert self.port is not None, "the gateway is not started"
        return f"http://127.0.0.1:{self.port}"

    def server(self) -> S3Server:
        return S3Server("rgw", self.endpoint_url, RGW_ACCESS_KEY, RGW_SECRET_KEY)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        deadline = time.monotonic() + RGW_STARTUP_TIMEOUT
        try:
            self.state = Path(tempfile.mkdtemp(prefix="formula-ops-rgw-"))
            self._configure()
            self._start_mon(deadline)
            self._start_osd(deadline)
            self._start_gateway(deadline)
            self._create_user(deadline)
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        assert self.state is not None
        state = self.state
        for folder in ("run", "log", "mon", "osd", "rgw", "crash"):
            (state / folder).mkdir()
        self.mon_port = free_port()
        self.port = free_port()
        while self.port == self.mon_port:
            self.port = free_port()
        config = state / "ceph.conf"
        config.write_text(
            f"""[global]
fsid = {uuid.uuid4()}
mon host = v2:127.0.0.1:{self.mon_port}
public network = 127.0.0.0/8
run dir = {state}/run
crash dir = {state}/crash
log file = {state}/log/$name.log
keyring = /dev/null
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
client mount timeout = 30
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
[mon.a]
mon data = {state}/mon
mon data avail crit = 0
mon data avail warn = 0
mon allow pool delete = true
mon cluster log to file = false
[osd.0]
osd data = {state}/osd
osd objectstore = memstore
memstore device bytes = 1073741824
osd class load list = *
osd class default list = *
[client.rgw.r]
rgw data = {state}/rgw
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw dns name = 127.0.0.1
"""
        )
        env = {key: value for key, value in os.environ.items() if not key.startswith("CEPH_")}
        self._env = {**env, "CEPH_CONF": str(config)}

    def _run(self, *args: str, deadline: float) -> str:
        timeout = max(1.0, deadline - time.monotonic())
        try:
            done = subprocess.run(
                args,
                capture_output=True,
                text=True,
                env=self._env,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RgwError(f"{' '.join(args[:3])} did not finish in time") from None
        if done.returncode != 0:
            raise RgwError(
                f"{' '.join(args[:3])} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done.stdout

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        assert self.state is not None
        with (self.state / "log" / f"{name}.out").open("wb") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,  # its own process group, killed at the end
            )
        self._daemons.append((name, process))
        return process

    def _fail(self, what: str, log: str) -> RgwError:
        assert self.state is not None
        return RgwError(
            f"{what} (state {self.state}):\n"
            + _tail(self.state / "log" / log)
            + "\n"
            + _tail(self.state / "log" / f"{log.split('.')[0]}.out", 5)
        )

    def _start_mon(self, deadline: float) -> None:
        assert self.state is not None
        assert self.mon_port is not None
        if _port_in_use(self.mon_port):
            raise RgwError(f"port {self.mon_port} for the Ceph monitor is in use")
        monmap = self.state / "monmap"
        fsid = (self.state / "ceph.conf").read_text().split("fsid = ", 1)[1].split("\n", 1)[0]
        self._run(
            "monmaptool",
            "--create",
            "--fsid",
            fsid,
            "--addv",
            "a",
            f"[v2:127.0.0.1:{self.mon_port}]",
            str(monmap),
            deadline=deadline,
        )
        self._run("ceph-mon", "--id", "a", "--mkfs", "--monmap", str(monmap), deadline=deadline)
        mon = self._spawn("mon.a", "ceph-mon", "--id", "a", "-f")
        while True:
            with contextlib.suppress(RgwError):
                self._run("ceph", "--connect-timeout", "5", "mon", "stat", deadline=deadline)
                return
            if mon.poll() is not None or time.monotonic() > deadline:
                raise self._fail("the Ceph monitor did not start", "mon.a.log")
            time.sleep(0.2)

    def _start_osd(self, deadline: float) -> None:
        osd_id = self._run("ceph", "osd", "create", deadline=deadline).strip()
        if osd_id != "0":
            raise RgwError(f"unexpected OSD id {osd_id!r}")
        self._run("ceph", "osd", "crush", "add", "osd.0", "1", "root=default", deadline=deadline)
        self._run("ceph-osd", "--id", "0", "--mkfs", deadline=deadline)
        osd = self._spawn("osd.0", "ceph-osd", "--id", "0", "-f")
        while True:
            status = self._run("ceph", "osd", "stat", "--format", "json", deadline=deadline)
            if '"num_up_osds":1' in status.replace(" ", ""):
                return
            if osd.poll() is not None or time.monotonic() > deadline:
                raise self._fail("the Ceph OSD did not start", "osd.0.log")
            time.sleep(0.2)

    def _start_gateway(self, deadline: float) -> None:
        assert self.port is not None
        if _port_in_use(self.port):
            raise RgwError(f"port {self.port} for the RADOS Gateway is in use")
        gateway = self._spawn("client.rgw.r", "radosgw", "-n", "client.rgw.r", "-f")
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.endpoint_url + "/").status_code == 200:
                        return
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise self._fail("the RADOS Gateway did not start", "client.rgw.r.log")
                time.sleep(0.2)

    def _create_user(self, deadline: float) -> None:
        self._run(
            "radosgw-admin",
            "user",
            "create",
            "--uid",
            "formula-ops-test",
            "--display-name",
            "formula-ops test",
            "--access-key",
            RGW_ACCESS_KEY,
            "--secret-key",
            RGW_SECRET_KEY,
            deadline=deadline,
        )
        client = self.server().client(retries={"max_attempts": 1})
        while True:
            try:
                client.list_buckets()
                return
            except Exception as exc:  # the user may take a moment to be known
                if time.monotonic() > deadline:
                    raise RgwError(f"the test user cannot sign in: {type(exc).__name__}") from None
            time.sleep(0.2)

    def close(self) -> None:
        """Stop every daemon (its whole process group) and remove the state folder: the
        gateway first, then the OSD, then the monitor (each stops quickly while the
        ones it talks to are still there)."""
        for _name, process in reversed(self._daemons):
            _kill_group(process, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            _kill_group(process, signal.SIGKILL)  # the group may hold forked helpers
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self._daemons = []
        if self.state is not None:
            shutil.rmtree(self.state, ignore_errors=True)
            self.state = None


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@pytest.fixture(scope="session")
def rgw_s3() -> Iterator[S3Server]:
    """A real S3: a private Ceph RADOS Gateway for the session (skips/fails when missing)."""
    require_rgw()
    gateway = RadosGateway()
    started = time.monotonic()
    try:
        gateway.start()
    except RgwError as exc:
        pytest.fail(str(exc), pytrace=False)
    print(
        f"\nRADOS Gateway started in {time.monotonic() - started:.1f} s at {gateway.endpoint_url}"
    )
    try:
        yield gateway.server()
    finally:
        gateway.close()
