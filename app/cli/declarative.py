"""``formula-ops apply -f``: environments and their services as a file, compared with the
server's through the API and made to match. The file is validated here with the
server's own schemas (the drivers' service configurations), so this module is imported
by the command itself, not with the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.markup import escape

from app.bootstrap import build_registry
from app.cli.client import ApiError, Client, connect
from app.cli.output import console, fail, field_errors
from app.core.redaction import redact_value
from app.drivers.base import DRIVERS
from app.environments.schemas import NAME, EnvironmentCreate, service_schemas


class ServiceFile(BaseModel):
    """A service: its name and the fields of PUT .../services/{name}."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME, max_length=63)


class EnvironmentFile(EnvironmentCreate):
    services: list[ServiceFile] = Field(default_factory=list)


class DeclarativeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environments: list[EnvironmentFile]


ENV_FIELDS = (
    "description",
    "database",
    "database_url",
    "backup_retention_days",
    "backup_smoke_queries",
    "required_checklist",
    "prometheus_url",
    "docker_hosts",
    "redis_url",
)
SERVICE_FIELDS = (
    "driver",
    "config",
    "health_url",
    "metrics_url",
    "health_timeout_seconds",
    "deploy_order",
    "settle_seconds",
    "smoke_tests",
)


def apply_file(file: Path, *, dry_run: bool, prune: bool) -> None:
    """What ``apply`` does (:func:`app.cli.deploy.apply`)."""
    try:
        raw = yaml.safe_load(file.read_text())
        wanted = DeclarativeFile.model_validate(raw)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except yaml.YAMLError as exc:
        fail(f"{file} is not valid YAML: {exc}")
    except ValidationError as exc:
        fail(f"{file} is not a valid environments file: " + "; ".join(field_errors(exc)))
    with connect() as client:
        changes = _plan(client, wanted, prune)
        if not changes:
            console.print("No differences: nothing to do.")
            return
        for change in changes:
            console.print(change.describe())
        if dry_run:
            console.print(f"Dry run: {len(changes)} change(s) not applied.")
            return
        for change in changes:
            change.apply(client)
        console.print(f"Applied {len(changes)} change(s).")


class _Change:
    def __init__(
        self,
        sign: str,
        path: str,
        body: dict[str, Any] | None,
        etag: str | None,
        diff: list[str],
    ) -> None:
        self.sign, self.path, self.body, self.etag, self.diff = sign, path, body, etag, diff

    def describe(self) -> str:
        style = {"+": "green", "~": "yellow", "-": "red"}[self.sign]
        name = self.path.removeprefix("/v1/environments/").replace("/services/", "/")
        lines = [f"[{style}]{self.sign} {escape(name)}[/{style}]"]
        lines += [f"    {escape(d)}" for d in self.diff]
        return "\n".join(lines)

    def apply(self, client: Client) -> None:
        headers = {"If-Match": self.etag} if self.etag else {}
        method = "DELETE" if self.sign == "-" else "PUT"
        client.request(method, self.path, json=self.body, headers=headers, retries=2)


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _shown(value: Any) -> str:
    """A value as printed (secrets hidden: a terminal's scrollback is a log)."""
    return _show(redact_value(value))


def _diff(current: dict[str, Any], wanted: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    return [
        f"{field}: {_shown(current.get(field))} -> {_shown(wanted.get(field))}"
        for field in fields
        if _show(current.get(field)) != _show(wanted.get(field))
    ]


def _plan(client: Client, wanted: DeclarativeFile, prune: bool) -> list[_Change]:
    changes: list[_Change] = []
    service_in = service_schemas(build_registry()[DRIVERS]).adapter
    for env in wanted.environments:
        path = f"/v1/environments/{quote(env.name, safe='')}"
        env_body = env.model_dump(mode="json", include=set(ENV_FIELDS))
        try:
            response = client.request("GET", path, retries=2)
            current: dict[str, Any] | None = response.json()
            etag = response.headers.get("ETag")
        except ApiError as exc:
            if exc.status != 404:
                raise
            current, etag = None, None
        if current is None:
            changes.append(
                _Change(
                    "+",
                    path,
                    env_body,
                    None,
                    [f"{k}: {_shown(v)}" for k, v in env_body.items() if v],
                )
            )
        else:
            diff = _diff(current, env_body, ENV_FIELDS)
            if diff:
                changes.append(_Change("~", path, env_body, etag, diff))
        existing = {s["name"]: s for s in (current or {}).get("services", [])}
        for svc in env.services:
            svc_path = f"{path}/services/{quote(svc.name, safe='')}"
            body = service_in.validate_python(svc.model_dump(exclude={"name"})).model_dump(
                mode="json", exclude_none=True
            )
            have = existing.pop(svc.name, None)
            if have is None:
                changes.append(_Change("+", svc_path, body, None, [f"driver: {body['driver']}"]))
                continue
            normalized = {
                **have,
                "smoke_tests": [
                    {k: v for k, v in t.items() if v is not None}
                    for t in have.get("smoke_tests", [])
                ],
            }
            wanted_view = {**body, "config": {**have.get("config", {}), **body["config"]}}
            diff = _diff(normalized, wanted_view, SERVICE_FIELDS)
            if diff:
                changes.append(_Change("~", svc_path, body, f'"{have["revision"]}"', diff))
        if prune:
            for name, have in existing.items():
                changes.append(
                    _Change(
                        "-",
                        f"{path}/services/{quote(name, safe='')}",
                        None,
                        f'"{have["revision"]}"',
                        ["not in the file"],
                    )
                )
    return changes
