"""Configuration from ``FORMULA_OPS_*`` environment variables.

The embedded default needs none of them: the database is a SQLite file under
``state_dir`` and ``formula-ops serve`` starts an embedded Redis server.
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.address import DEFAULT_HOST, DEFAULT_PORT

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ServiceProbe(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    url: str = Field(pattern=r"^https?://")


class HealthCheckSettings(BaseModel):
    """What the daily health check probes (``FORMULA_OPS_HEALTH_CHECK__...``)."""

    services: list[ServiceProbe] = Field(
        default_factory=list,
        description="Health URLs to probe; default: the control plane's own /health.",
    )
    disk_paths: list[str] = Field(default_factory=lambda: ["/"])
    log_files: list[str] = Field(default_factory=list)
    schedule_hour: int = Field(default=6, ge=0, le=23, description="Daily run, UTC hour.")
    schedule_minute: int = Field(default=0, ge=0, le=59)
    schedule_enabled: bool = True


class DockerSettings(BaseModel):
    """What services of the docker driver may ask for (``FORMULA_OPS_DOCKER__...``).

    Both default to False: a service config that needs one is refused by the API (422)
    and by the driver at deploy time.
    """

    allow_host_network: bool = Field(
        default=False,
        description="Allow `network: host` and `network: container:<name>`, which share "
        "the host's or another container's network namespace.",
    )
    allow_sensitive_binds: bool = Field(
        default=False,
        description="Allow bind mounts of `/`, of a Docker socket (`docker.sock`, the "
        "engine's own) and of the directories holding one.",
    )


def _comma_list(value: object) -> object:
    """A comma-separated environment value as a list (a JSON list passes as it is)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _network_list(value: list[str]) -> list[str]:
    for item in value:
        ipaddress.ip_network(item, strict=False)  # ValueError: not an address or network
    return value


class WebhookSettings(BaseModel):
    """How events reach webhook endpoints and notification channels
    (``FORMULA_OPS_WEBHOOKS__...``)."""

    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks (CIDR, comma-separated) a destination may resolve to although "
        "loopback, private, link-local or otherwise reserved, e.g. an on-premise receiver "
        "`10.0.5.0/24`. Empty: only public addresses.",
    )
    allow_http: bool = Field(
        default=False, description="Allow `http://` destinations (default: https only)."
    )
    channel_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra hosts (comma-separated) a notification channel may contact, beside "
        "the fixed hosts of the chat services it names.",
    )
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        max_length=20,
        description="Delay before each attempt (the first is the initial delivery).",
    )
    jitter: float = Field(default=0.1, ge=0, le=0.5, description="± fraction of each delay.")
    timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    disable_after_seconds: float = Field(
        default=5 * 86400, gt=0, description="Failing this long with no success disables."
    )
    rotation_overlap_seconds: float = Field(
        default=86400, ge=0, description="How long the previous secret still signs."
    )
    dispatch_interval_seconds: float = Field(default=0.25, gt=0, le=10)
    lease_seconds: float = Field(
        default=60, ge=5, le=3600, description="After this, an unfinished attempt is retried."
    )
    batch_size: int = Field(default=64, ge=1, le=500, description="Deliveries per job.")
    retention_days: int = Field(
        default=30, ge=1, le=3650, description="Finished deliveries and sent events kept."
    )

    _comma_lists = field_validator("allowed_networks", "channel_hosts", mode="before")(_comma_list)
    _networks = field_validator("allowed_networks")(_network_list)

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _delays(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("delays are seconds, not negative")
        return value


class AlertSettings(BaseModel):
    """The Alertmanager receiver (``FORMULA_OPS_ALERTS__...``)."""

    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="A larger notification is refused with 413 (it never reaches a handler "
        "when FORMULA_OPS_MAX_BODY_BYTES is smaller).",
    )
    value_annotation: str = Field(
        default="value",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The annotation holding the measured value, graded against the alert's "
        "threshold when it is a number.",
    )


# A response time: ``immediate``, ``next_business_day``, or a number and a unit
# (s, m, h, d), e.g. ``15m``.
CLOCK_DURATION = r"^(immediate|next_business_day|[0-9]{1,5}[smhd])$"


def _clock(default: str, what: str) -> Any:
    return Field(default=default, pattern=CLOCK_DURATION, description=what)


class IncidentSettings(BaseModel):
    """Incident response clocks and automation (``FORMULA_OPS_INCIDENTS__...``).

    Each severity has three clocks: acknowledge within ``ack_*`` of opening, post an
    update within ``update_*`` of the last one, resolve within ``resolve_*`` of opening.
    """

    ack_p0: str = _clock("immediate", "P0: acknowledge within (runbook: immediate).")
    ack_p1: str = _clock("15m", "P1: acknowledge within (runbook: 15 minutes).")
    ack_p2: str = _clock("1h", "P2: acknowledge within (runbook: 1 hour).")
    ack_p3: str = _clock("next_business_day", "P3: acknowledge by (runbook: next business day).")
    update_p0: str = _clock("15m", "P0: the longest time between two updates.")
    update_p1: str = _clock("30m", "P1: the longest time between two updates.")
    update_p2: str = _clock("2h", "P2: the longest time between two updates.")
    update_p3: str = _clock("next_business_day", "P3: the longest time between two updates.")
    resolve_p0: str = _clock("4h", "P0: resolve within.")
    resolve_p1: str = _clock("8h", "P1: resolve within.")
    resolve_p2: str = _clock("3d", "P2: resolve within.")
    resolve_p3: str = _clock("14d", "P3: resolve within.")
    warning_share: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="`incident.sla_warning` once this share of a clock's time has passed.",
    )
    business_timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone of business days (Mon-Fri) for `next_business_day`.",
    )
    business_day_start: str = Field(
        default="09:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="When a business day starts (HH:MM, in the business time zone).",
    )
    deployment_lookback_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        description="An incident lists its services' deployments this long before it opened.",
    )
    auto_open: bool = Field(
        default=True,
        description="A deployment that ended `error` or a failed backup verification opens an "
        "incident.",
    )
    auto_open_severity: Literal["P0", "P1", "P2", "P3"] = Field(
        default="P2", description="The severity of an incident opened automatically."
    )

    @field_validator("business_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not an IANA time zone: {value!r}") from None
        return value


class MaintenanceSettings(BaseModel):
    """``FORMULA_OPS_MAINTENANCES__*``: the scheduler that starts and ends windows."""

    schedule_enabled: bool = Field(
        default=True, description="The worker starts and ends windows on time."
    )
    schedule_every_seconds: int = Field(
        default=15, ge=1, le=60, description="The scheduler's period (a divisor of 60)."
    )
    verify_timeout_seconds: int = Field(
        default=1800,
        ge=0,
        le=7 * 86400,
        description="A verifying window whose services stay unhealthy completes after this.",
    )

    @field_validator("schedule_every_seconds")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("must divide 60 (the scheduler runs at fixed seconds of a minute)")
        return value


class ScheduleSettings(BaseModel):
    """``FORMULA_OPS_SCHEDULES__*``: the worker job that fires schedules (``/v1/schedules``)."""

    fire_enabled: bool = Field(
        default=True, description="The worker fires due schedules (and creates the defaults)."
    )
    fire_every_seconds: int = Field(
        default=10, ge=1, le=60, description="How often due schedules are fired (divides 60)."
    )
    grace_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="How late a slot may still fire; an older one is reported missed.",
    )
    max_missed_rows: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Missed slots recorded one row each after a downtime (the latest ones); "
        "the event and the audit record count them all.",
    )

    @field_validator("fire_every_seconds")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("must divide 60 (the job runs at fixed seconds of a minute)")
        return value


class BackupSettings(BaseModel):
    """Backups, restore drills and retention (``FORMULA_OPS_BACKUPS__...``); where backups
    are stored is ``FORMULA_OPS_STORAGE_URL``."""

    retention_days: int = Field(
        default=30,
        ge=1,
        le=36500,
        description="Backups older than this are deleted daily (runbook: 30 days), except "
        "the newest verified one; an environment may set its own.",
    )
    postgres_format: Literal["custom", "plain"] = Field(
        default="custom",
        description="`pg_dump` format: `custom` (`.dump`, restored by `pg_restore`) or "
        "`plain` (`.sql.gz`, restored by `psql`).",
    )
    largest_tables: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="A backup records exact row counts of this many of its largest tables; "
        "a restore drill checks them.",
    )
    part_size_mb: int = Field(
        default=8, ge=5, le=512, description="S3 multipart upload part size (MiB)."
    )
    schedule_enabled: bool = Field(
        default=True,
        description="Daily backups of every environment's database and of the control plane.",
    )
    schedule_hour: int = Field(default=2, ge=0, le=23, description="Daily backups: hour (UTC).")
    schedule_minute: int = Field(default=30, ge=0, le=59, description="Daily backups: minute.")
    backup_self: bool = Field(
        default=True, description="The daily schedule backs up the control plane's database too."
    )
    drill_weekday: int = Field(
        default=6,
        ge=0,
        le=6,
        description="Weekly restore drill of each target's newest backup: day (0 = Monday).",
    )
    drill_hour: int = Field(default=4, ge=0, le=23, description="Weekly restore drill: hour (UTC).")
    retention_hour: int = Field(default=3, ge=0, le=23, description="Daily retention: hour (UTC).")
    timeout_seconds: int = Field(
        default=6 * 3600,
        ge=10,
        le=7 * 86400,
        description="The longest a dump, drill or restore step may take.",
    )


def _shipped_catalog() -> list[Path]:
    """The catalog shipped with the code: ``runbooks/`` beside the ``app`` package."""
    return [Path(__file__).resolve().parents[2] / "runbooks"]


class StatusSettings(BaseModel):
    """The public status page and its JSON (``FORMULA_OPS_STATUS__...``)."""

    page_name: str = Field(
        default="Formula Ops",
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$",
        description="The name the status page shows.",
    )
    page_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://[^\x00-\x1f\x7f-\x9f ]+$",
        description="The public address of the HTML status page (`page.url`, incident "
        "`shortlink`s). Unset: the address the request came to, ending in `/status`.",
    )
    max_age_seconds: int = Field(
        default=5,
        ge=0,
        le=3600,
        description="`Cache-Control: max-age` of the public status (browsers and proxies "
        "may serve it this long; the server's own cache follows every change at once).",
    )


def _path_list(value: object) -> object:
    """A JSON list, or comma-separated folders, as a list."""
    if isinstance(value, str) and value.strip().startswith("["):
        return json.loads(value)
    return _comma_list(value)


class RunbookSettings(BaseModel):
    """The runbook catalog (``FORMULA_OPS_RUNBOOKS__...``): where its runbooks are, and
    where its file actions may read and delete (a path given to a step must lie inside
    one of those folders once its symbolic links are resolved; anything else is
    refused)."""

    catalog_dirs: list[Path] = Field(
        default_factory=_shipped_catalog,
        description="Folders of runbook YAML files (searched recursively), loaded and "
        "validated at start-up; default: the catalog shipped with the code (`runbooks/`).",
    )
    log_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Folders (absolute; a JSON list or comma-separated) whose files "
        "`security_log_scan` may read, beside the control plane's own service logs "
        "(`<state_dir>/processes`). Empty: only those.",
    )
    cleanup_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Folders (absolute; a JSON list or comma-separated) under which "
        "`file_cleanup` may delete files. Empty: nowhere.",
    )

    _lists = field_validator("log_paths", "cleanup_paths", mode="before")(_path_list)

    @field_validator("log_paths", "cleanup_paths")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith("/") or "\x00" in item:
                raise ValueError(f"not an absolute path: {item!r}")
            if ".." in Path(item).parts:
                raise ValueError(f"a folder may not contain '..': {item!r}")
        return value


class Settings(BaseSettings):
    """Every setting of the service; built once per process and passed in."""

    model_config = SettingsConfigDict(
        env_prefix="FORMULA_OPS_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,  # a refused value may be a secret: never echo it
    )

    environment: Literal["development", "production"] = "development"
    state_dir: Path = Field(
        default=Path(".formula-ops"),
        description="Where the embedded default keeps its SQLite file and Redis data.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://... or sqlite:///...; default: SQLite under state_dir.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://... or unix://...; default: the embedded Redis of `serve`.",
    )
    queue_name: str = Field(default="formula-ops:queue", min_length=1)
    redis_prefix: str = Field(
        default="formula-ops", min_length=1, description="Prefix of every other Redis key."
    )
    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    metrics_public: bool = True
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] | None = Field(
        default=None,
        description="`text` lines, or `json`: one JSON object per line. Unset: `json` for "
        "`api` and `worker`, `text` for `serve` and the other commands.",
    )
    ready_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    worker_max_jobs: int = Field(default=10, ge=1, le=1000)
    worker_job_timeout_seconds: int = Field(default=3600, ge=1)
    worker_max_restarts: int = Field(
        default=5,
        ge=0,
        description="`worker --processes N`: a dead worker process is started again, unless "
        "more than this many died within `worker_restart_window_seconds` (then it exits 1).",
    )
    worker_restart_window_seconds: float = Field(default=60.0, gt=0)
    run_lease_seconds: int = Field(default=60, ge=5, le=3600)
    auth_failures_per_minute: int = Field(
        default=10, ge=1, description="Failed authentications per client address per minute."
    )
    token_requests_per_minute: int = Field(default=600, ge=1)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of reverse proxies whose X-Forwarded-For is "
        "believed (comma-separated); empty: the connection's peer address is the client.",
    )
    idempotency_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    worker_poll_delay_seconds: float = Field(default=0.5, gt=0, le=5)
    reconcile_every_seconds: int = Field(default=5, ge=1, le=60)
    reconcile_stale_after_seconds: float = Field(default=10, gt=0)
    audit_seal_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="How often workers and API processes seal new audit events into the chain.",
    )
    audit_seal_bound_seconds: float = Field(
        default=2.0,
        gt=0,
        description="`audit verify` reports events left unsealed for longer than this.",
    )
    seed_local_environment: bool = Field(
        default=True, description="`serve` creates the `local` environment when missing."
    )
    local_backend_port: int = Field(default=18081, ge=1, le=65535)
    local_frontend_port: int = Field(default=18082, ge=1, le=65535)
    health_check: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    maintenances: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    backups: BackupSettings = Field(default_factory=BackupSettings)
    runbooks: RunbookSettings = Field(default_factory=RunbookSettings)
    storage_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Where backups are stored: file:///path or s3://bucket/prefix (with the "
        "usual AWS_* variables). Unset: the folder `backups` under the state directory.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        max_length=2000,
        description="The S3 endpoint (an S3-compatible server such as Ceph RGW or MinIO).",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="Server-side secret sealing stored idempotent responses; every API "
        "replica must share it. Required in production (32+ random characters); in "
        "development one is generated once in <state_dir>/secret.key.",
    )

    @field_validator("database_url", "redis_url", "secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    _proxy_list = field_validator("trusted_proxies", mode="before")(_comma_list)
    _proxy_networks = field_validator("trusted_proxies")(_network_list)

    @field_validator("secret_key")
    @classmethod
    def _secret_key_in_production(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if info.data.get("environment") != "production":
            return value
        if value is None:
            raise ValueError(
                "FORMULA_OPS_SECRET_KEY is required when FORMULA_OPS_ENVIRONMENT=production "
                "(every API replica must share it); generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if is_placeholder_secret(value.get_secret_value()):
            raise ValueError(
                "FORMULA_OPS_SECRET_KEY looks like a placeholder: use at least 32 random "
                "characters in production"
            )
        return value

    @property
    def database_url_value(self) -> str:
        """The SQLAlchemy URL, with the async driver of its dialect."""
        if self.database_url is None:
            path = (self.state_dir / "formula-ops.db").resolve()
            return f"sqlite+aiosqlite:///{path}"
        return async_database_url(self.database_url.get_secret_value())

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url_value.startswith("sqlite")

    @property
    def storage_url_value(self) -> str:
        """Where backups are stored (default: ``<state_dir>/backups``)."""
        if self.storage_url:
            return self.storage_url
        return (self.state_dir / "backups").resolve().as_uri()

    @property
    def self_database_url(self) -> str:
        """The control plane's own database as a plain URL (what its backup dumps)."""
        url = self.database_url_value
        for driver in ("+aiosqlite", "+psycopg", "+asyncpg"):
            url = url.replace(driver, "", 1)
        return url


MIN_SECRET_KEY_LENGTH = 32
_PLACEHOLDER_WORDS = ("changeme", "changethis", "replaceme", "placeholder", "yoursecret")


def is_placeholder_secret(value: str) -> bool:
    """Too short, too few distinct characters, or an example value left in place."""
    letters = re.sub(r"[^a-z0-9]", "", value.lower())
    return (
        len(value) < MIN_SECRET_KEY_LENGTH
        or len(set(value)) < 8
        or any(word in letters for word in _PLACEHOLDER_WORDS)
    )


def async_database_url(url: str) -> str:
    """Map the URLs people write to the async drivers this service runs on."""
    for prefix, replacement in (
        ("postgres://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("postgresql+psycopg2://", "postgresql+psycopg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return replacement + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` instead."""
    return Settings()
