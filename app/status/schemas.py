"""The public status documents, in Atlassian Statuspage's public API (v2) shapes: the
field names and status vocabularies a Statuspage client expects.

These models document the responses (OpenAPI); the bodies themselves are built as plain
data once per status revision (:mod:`app.status.documents`) and served from the cache.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, StrictBool

from app.components.vocabulary import (
    ComponentStatus,
    Impact,
    IncidentStatus,
    MaintenanceStatus,
    StatusIndicator,
)


class Page(BaseModel):
    id: str
    name: str
    url: str = Field(description="The HTML status page.")
    time_zone: str = Field(description="Always `Etc/UTC`: every timestamp is UTC.")
    updated_at: dt.datetime = Field(description="When anything the page shows last changed.")


class PageStatus(BaseModel):
    indicator: StatusIndicator = Field(
        description="The worst of the components' statuses and the unresolved incidents' "
        "impacts; `maintenance` while a window is in progress and nothing is worse."
    )
    description: str


class PublicComponent(BaseModel):
    id: str
    name: str
    status: ComponentStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    position: int
    description: str | None
    showcase: StrictBool
    start_date: dt.date | None
    group_id: str | None = Field(description="The group component this one belongs to.")
    page_id: str
    group: StrictBool = Field(description="A group of components (its members in `components`).")
    only_show_if_degraded: StrictBool
    components: list[str] | None = Field(
        default=None, description="A group's member component ids (groups only)."
    )


class PublicUpdate(BaseModel):
    id: str
    status: str = Field(description="The incident's (or window's) status this update set.")
    body: str
    incident_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    display_at: dt.datetime


class PublicIncident(BaseModel):
    id: str
    name: str
    status: IncidentStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    monitoring_at: dt.datetime | None
    resolved_at: dt.datetime | None
    impact: Impact
    shortlink: str
    started_at: dt.datetime
    page_id: str
    incident_updates: list[PublicUpdate] = Field(description="Public updates, newest first.")
    components: list[PublicComponent]


class PublicMaintenance(BaseModel):
    id: str
    name: str
    status: MaintenanceStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    monitoring_at: dt.datetime | None
    resolved_at: dt.datetime | None
    impact: str = Field(description="Always `maintenance`.")
    shortlink: str
    started_at: dt.datetime
    page_id: str
    incident_updates: list[PublicUpdate]
    components: list[PublicComponent]
    scheduled_for: dt.datetime
    scheduled_until: dt.datetime


class StatusDocument(BaseModel):
    page: Page
    status: PageStatus


class ComponentsDocument(BaseModel):
    page: Page
    components: list[PublicComponent]


class IncidentsDocument(BaseModel):
    page: Page
    incidents: list[PublicIncident]


class MaintenancesDocument(BaseModel):
    page: Page
    scheduled_maintenances: list[PublicMaintenance]


class SummaryDocument(BaseModel):
    page: Page
    components: list[PublicComponent]
    incidents: list[PublicIncident] = Field(description="Unresolved incidents.")
    scheduled_maintenances: list[PublicMaintenance] = Field(
        description="Upcoming and in-progress windows."
    )
    status: PageStatus
