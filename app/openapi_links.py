"""OpenAPI links: where a value one answer gives is what the next request takes.

An answer names what it created or read (an id, a name); a link says which operation
takes that value, and in which parameter (OpenAPI 3.1 runtime expressions). Clients and
generators may follow them; the stateful API tests do (tests/test_openapi_stateful.py):
they chain real requests along them. A link with no parameters is the next request to
make to see the change (the public status page after an incident is opened).

:func:`add_links` writes them into the document; it refuses a link to an operation, a
status or a parameter the document does not have, so they cannot fall behind the routes.
"""

from __future__ import annotations

from typing import Any

Link = dict[str, Any]
# (source operationId, response status) -> link name -> link
Links = dict[tuple[str, str], dict[str, Link]]


def _link(operation_id: str, body: dict[str, Any] | None = None, **parameters: str) -> Link:
    link: Link = {"operationId": operation_id}
    if parameters:
        link["parameters"] = parameters
    if body is not None:
        link["requestBody"] = body
    return link


def _field(pointer: str) -> str:
    return f"$response.body#/{pointer}"


def _run(pointer: str) -> dict[str, Link]:
    """What can be done with a run: read it, cancel it, answer its approval."""
    run_id = _field(pointer)
    return {
        "GetRun": _link("getRun", run_id=run_id),
        "CancelRun": _link("cancelRun", run_id=run_id),
        "ApproveRun": _link("approveRun", run_id=run_id),
        "RejectRun": _link("rejectRun", run_id=run_id),
    }


def _token(token_id: str) -> dict[str, Link]:
    return {
        "GetToken": _link("getToken", token_id=token_id),
        "RevokeToken": _link("revokeToken", token_id=token_id),
    }


def _environment(name: str) -> dict[str, Link]:
    return {
        "GetEnvironment": _link("getEnvironment", name=name),
        "PutEnvironment": _link("putEnvironment", name=name),
        "DeleteEnvironment": _link("deleteEnvironment", name=name),
        "ListServices": _link("listServices", name=name),
        "PutService": _link("putService", name=name),
        "ListDeployments": _link("listDeployments", environment=name),
        "CreateDeployment": _link("createDeployment", body={"environment": name}),
        "CreateBackup": _link("createBackup", body={"environment": name}),
    }


def _service(name: str, service: str, version: str) -> dict[str, Link]:
    links = {
        title: _link(operation, name=name, service_name=service)
        for title, operation in (
            ("GetService", "getService"),
            ("PutService", "putService"),
            ("DeleteService", "deleteService"),
            ("ListPins", "listPins"),
        )
    }
    unpin = _link("deletePin", name=name, service_name=service, version=version)
    body = {"environment": name, "service": service}
    return {**links, "DeletePin": unpin, "CreateDeployment": _link("createDeployment", body=body)}


def _deployment(deployment_id: str) -> dict[str, Link]:
    return {
        "GetDeployment": _link("getDeployment", deployment_id=deployment_id),
        "CancelDeployment": _link("cancelDeployment", deployment_id=deployment_id),
        "RollbackDeployment": _link("rollbackDeployment", deployment_id=deployment_id),
        "GetDeploymentEvidence": _link("getDeploymentEvidence", deployment_id=deployment_id),
        "GetRun": _link("getRun", run_id=deployment_id),
    }


def _webhook(webhook_id: str) -> dict[str, Link]:
    return {
        name: _link(operation, webhook_id=webhook_id)
        for name, operation in (
            ("GetWebhook", "getWebhook"),
            ("UpdateWebhook", "updateWebhook"),
            ("DeleteWebhook", "deleteWebhook"),
            ("RotateWebhookSecret", "rotateWebhookSecret"),
            ("TestWebhook", "testWebhook"),
            ("ListWebhookDeliveries", "listWebhookDeliveries"),
        )
    }


def _delivery(delivery_id: str) -> dict[str, Link]:
    return {
        "GetWebhookDelivery": _link("getWebhookDelivery", delivery_id=delivery_id),
        "RedeliverWebhook": _link("redeliverWebhook", delivery_id=delivery_id),
    }


def _component(component_id: str) -> dict[str, Link]:
    return {
        "GetComponent": _link("getComponent", component_id=component_id),
        "UpdateComponent": _link("updateComponent", component_id=component_id),
        "DeleteComponent": _link("deleteComponent", component_id=component_id),
        # What the public sees of it.
        "GetStatusComponents": _link("getStatusComponents"),
        "GetStatusIndicator": _link("getStatusIndicator"),
        "GetStatusSummary": _link("getStatusSummary"),
    }


def _threshold(name: str) -> dict[str, Link]:
    return {
        "GetThreshold": _link("getThreshold", name=name),
        "UpdateThreshold": _link("updateThreshold", name=name),
    }


def _incident(incident_id: str) -> dict[str, Link]:
    return {
        name: _link(operation, incident_id=incident_id)
        for name, operation in (
            ("GetIncident", "getIncident"),
            ("UpdateIncident", "updateIncident"),
            ("AddIncidentUpdate", "addIncidentUpdate"),
            ("AcknowledgeIncident", "acknowledgeIncident"),
            ("ResolveIncident", "resolveIncident"),
            ("PutIncidentPostmortem", "putIncidentPostmortem"),
            ("RollbackIncidentDeployment", "rollbackIncidentDeployment"),
        )
    }


_PUBLIC_INCIDENTS = {
    "GetStatusIncidents": _link("getStatusIncidents"),
    "GetStatusUnresolvedIncidents": _link("getStatusUnresolvedIncidents"),
    "GetStatusPage": _link("getStatusPage"),
}


def _maintenance(maintenance_id: str) -> dict[str, Link]:
    return {
        name: _link(operation, maintenance_id=maintenance_id)
        for name, operation in (
            ("GetMaintenance", "getMaintenance"),
            ("UpdateMaintenance", "updateMaintenance"),
            ("CreateMaintenanceUpdate", "createMaintenanceUpdate"),
            ("StartMaintenance", "startMaintenance"),
            ("CompleteMaintenance", "completeMaintenance"),
            ("CancelMaintenance", "cancelMaintenance"),
        )
    }


_PUBLIC_MAINTENANCES = {
    "GetStatusMaintenances": _link("getStatusMaintenances"),
    "GetStatusUpcomingMaintenances": _link("getStatusUpcomingMaintenances"),
    "GetStatusActiveMaintenances": _link("getStatusActiveMaintenances"),
}


def _backup(backup_id: str) -> dict[str, Link]:
    return {
        "GetBackup": _link("getBackup", backup_id=backup_id),
        "DeleteBackup": _link("deleteBackup", backup_id=backup_id),
        "VerifyBackup": _link("verifyBackup", backup_id=backup_id),
        "CreateRestore": _link("createRestore", body={"backup_id": backup_id}),
    }


def _schedule(schedule_id: str) -> dict[str, Link]:
    return {
        name: _link(operation, schedule_id=schedule_id)
        for name, operation in (
            ("GetSchedule", "getSchedule"),
            ("UpdateSchedule", "updateSchedule"),
            ("DeleteSchedule", "deleteSchedule"),
            ("ListScheduleSlots", "listScheduleSlots"),
        )
    }


def _runbook(name: str) -> dict[str, Link]:
    return {
        "GetRunbook": _link("getRunbook", name=name),
        "StartRunbookRun": _link("startRunbookRun", name=name),
        "CreateSchedule": _link("createSchedule", body={"runbook": name}),
    }


def _each(statuses: tuple[str, ...], operation_id: str, links: dict[str, Link]) -> Links:
    return {(operation_id, status): links for status in statuses}


ID = _field("id")
FIRST = _field("items/0/id")
STARTED = ("201", "202")  # finished within `Prefer: wait`, or still going

LINKS: Links = {
    # Tokens
    ("createToken", "201"): _token(ID),
    ("listTokens", "200"): _token(FIRST),
    ("reviewTokens", "200"): _token(_field("items/0/token/id")),
    ("getToken", "200"): {"RevokeToken": _link("revokeToken", token_id=ID)},
    ("revokeToken", "200"): {
        "GetToken": _link("getToken", token_id=ID),
        "ListAuditEvents": _link("listAuditEvents", resource_id=ID),
    },
    # Audit trail
    ("listAuditEvents", "200"): {"VerifyAuditTrail": _link("verifyAuditTrail")},
    # Runs
    ("listRuns", "200"): _run("items/0/id"),
    ("getRun", "200"): {k: v for k, v in _run("id").items() if k != "GetRun"},
    # A cancelled run has ended, so its stream of events ends too.
    ("cancelRun", "200"): {
        "GetRun": _link("getRun", run_id=ID),
        "StreamRunEvents": _link("streamRunEvents", run_id=ID),
    },
    ("approveRun", "200"): {"GetRun": _link("getRun", run_id=_field("run_id"))},
    ("rejectRun", "200"): {"GetRun": _link("getRun", run_id=_field("run_id"))},
    **_each(
        STARTED,
        "createHealthCheck",
        {"GetHealthCheck": _link("getHealthCheck", run_id=ID), **_run("id")},
    ),
    ("listHealthChecks", "200"): {"GetHealthCheck": _link("getHealthCheck", run_id=FIRST)},
    ("getHealthCheck", "200"): {"CancelRun": _link("cancelRun", run_id=ID)},
    # Environments and their services
    ("listEnvironments", "200"): _environment(_field("items/0/name")),
    **_each(("201",), "createEnvironment", _environment(_field("name"))),
    **_each(("200", "201"), "putEnvironment", _environment(_field("name"))),
    ("getEnvironment", "200"): _environment(_field("name")),
    ("deleteEnvironment", "204"): {
        "GetEnvironment": _link("getEnvironment", name="$request.path.name")
    },
    ("listServices", "200"): _service(
        "$request.path.name", _field("items/0/name"), _field("items/0/pins/0/version")
    ),
    **{
        (operation, status): _service(
            _field("environment"), _field("name"), _field("pins/0/version")
        )
        for operation, status in (
            ("putService", "200"),
            ("putService", "201"),
            ("getService", "200"),
        )
    },
    ("deleteService", "204"): {
        "GetService": _link(
            "getService", name="$request.path.name", service_name="$request.path.service_name"
        )
    },
    ("listPins", "200"): {
        "DeletePin": _link(
            "deletePin",
            name="$request.path.name",
            service_name="$request.path.service_name",
            version=_field("items/0/version"),
        )
    },
    ("deletePin", "204"): {
        "ListPins": _link(
            "listPins", name="$request.path.name", service_name="$request.path.service_name"
        )
    },
    # Deployments
    **_each(STARTED, "createDeployment", _deployment(ID)),
    ("listDeployments", "200"): _deployment(FIRST),
    ("getDeployment", "200"): _deployment(ID),
    ("cancelDeployment", "202"): _deployment(ID),
    **_each(STARTED, "rollbackDeployment", _deployment(ID)),
    ("getDeploymentEvidence", "200"): {
        "GetDeployment": _link("getDeployment", deployment_id=_field("deployment_id"))
    },
    # Webhooks and their deliveries
    ("createWebhook", "201"): _webhook(ID),
    ("listWebhooks", "200"): _webhook(FIRST),
    ("getWebhook", "200"): _webhook(ID),
    ("updateWebhook", "200"): _webhook(ID),
    ("deleteWebhook", "204"): {
        "GetWebhook": _link("getWebhook", webhook_id="$request.path.webhook_id")
    },
    ("rotateWebhookSecret", "200"): {
        "GetWebhook": _link("getWebhook", webhook_id="$request.path.webhook_id")
    },
    ("testWebhook", "200"): _delivery(_field("delivery/id")),
    ("listWebhookDeliveries", "200"): _delivery(FIRST),
    ("getWebhookDelivery", "200"): {
        **_delivery(ID),
        "GetWebhook": _link("getWebhook", webhook_id=_field("endpoint_id")),
    },
    ("redeliverWebhook", "202"): _delivery(ID),
    # Components and thresholds
    ("createComponent", "201"): _component(ID),
    ("listComponents", "200"): _component(FIRST),
    ("getComponent", "200"): _component(ID),
    ("updateComponent", "200"): _component(ID),
    ("deleteComponent", "204"): {
        "GetComponent": _link("getComponent", component_id="$request.path.component_id")
    },
    ("listThresholds", "200"): _threshold(_field("items/0/name")),
    ("getThreshold", "200"): _threshold(_field("name")),
    ("updateThreshold", "200"): _threshold(_field("name")),
    # Alerts open incidents; incidents
    ("receiveAlertmanagerNotification", "200"): _incident(_field("incident_id")),
    ("createIncident", "201"): {**_incident(ID), **_PUBLIC_INCIDENTS},
    ("listIncidents", "200"): _incident(FIRST),
    **{
        (operation, status): {**_incident(ID), **_PUBLIC_INCIDENTS}
        for operation, status in (
            ("getIncident", "200"),
            ("updateIncident", "200"),
            ("addIncidentUpdate", "201"),
            ("acknowledgeIncident", "200"),
            ("resolveIncident", "200"),
            ("putIncidentPostmortem", "200"),
        )
    },
    ("rollbackIncidentDeployment", "202"): _deployment(ID),
    # Maintenance windows
    ("createMaintenance", "201"): {**_maintenance(ID), **_PUBLIC_MAINTENANCES},
    ("listMaintenances", "200"): _maintenance(FIRST),
    **{
        (operation, status): {**_maintenance(ID), **_PUBLIC_MAINTENANCES}
        for operation, status in (
            ("getMaintenance", "200"),
            ("updateMaintenance", "200"),
            ("createMaintenanceUpdate", "201"),
            ("startMaintenance", "200"),
            ("completeMaintenance", "200"),
            ("cancelMaintenance", "200"),
        )
    },
    # Backups and restores
    **_each(
        STARTED,
        "createBackup",
        {**_backup(ID), "GetRun": _link("getRun", run_id=_field("run_id"))},
    ),
    ("listBackups", "200"): _backup(FIRST),
    ("getBackup", "200"): _backup(ID),
    ("deleteBackup", "200"): {"GetBackup": _link("getBackup", backup_id=ID)},
    **_each(
        STARTED,
        "verifyBackup",
        {
            "GetRun": _link("getRun", run_id=ID),
            "GetBackup": _link("getBackup", backup_id="$request.path.backup_id"),
        },
    ),
    **_each(
        STARTED,
        "createRestore",
        {
            "GetRestore": _link("getRestore", restore_id=ID),
            "GetRun": _link("getRun", run_id=ID),
        },
    ),
    ("listRestores", "200"): {"GetRestore": _link("getRestore", restore_id=FIRST)},
    # Runbooks and schedules
    ("listRunbooks", "200"): _runbook(_field("items/0/name")),
    ("getRunbook", "200"): _runbook(_field("name")),
    **_each(STARTED, "startRunbookRun", _run("id")),
    ("createSchedule", "201"): _schedule(ID),
    ("listSchedules", "200"): _schedule(FIRST),
    ("getSchedule", "200"): _schedule(ID),
    ("updateSchedule", "200"): _schedule(ID),
    ("deleteSchedule", "204"): {
        "GetSchedule": _link("getSchedule", schedule_id="$request.path.schedule_id")
    },
}


def add_links(schema: dict[str, Any], links: Links = LINKS) -> None:
    """Write ``links`` into ``schema``'s responses; refuse one that names an operation,
    a response or a parameter the document does not have."""
    operations = {
        operation["operationId"]: operation
        for item in schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    for (source, status), named in links.items():
        if source not in operations:
            raise ValueError(f"link from unknown operation {source}")
        responses = operations[source]["responses"]
        if status not in responses:
            raise ValueError(f"link from {source}'s undocumented {status} response")
        for name, link in named.items():
            target = operations.get(link["operationId"])
            if target is None:
                raise ValueError(f"{source} {status} {name}: no operation {link['operationId']}")
            known = {parameter["name"] for parameter in target.get("parameters", [])}
            unknown = set(link.get("parameters", {})) - known
            if unknown:
                raise ValueError(f"{source} {status} {name}: no parameters {sorted(unknown)}")
            if "requestBody" in link and "requestBody" not in target:
                raise ValueError(f"{source} {status} {name}: the target takes no body")
        responses[status]["links"] = dict(named)
