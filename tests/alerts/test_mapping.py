"""From an alert's labels and annotations to a severity, a threshold and components
(pure functions; the thresholds are the runbook's, as the migration seeds them)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from app.alerts import mapping
from app.alerts.mapping import ComponentRef
from app.alerts.schemas import AlertmanagerNotification
from app.thresholds.defaults import RUNBOOK
from app.thresholds.models import Threshold
from tests.alerts import payloads


def runbook(**changes: dict[str, object]) -> dict[str, Threshold]:
    rows = {row["name"]: Threshold(**{**row, **changes.get(row["name"], {})}) for row in RUNBOOK}
    for threshold in rows.values():
        threshold.warning_severity = threshold.warning_severity or "P2"
        threshold.critical_severity = threshold.critical_severity or "P1"
    return rows


def assess(
    labels: dict[str, str], annotations: dict[str, str] | None = None, **kw: object
) -> mapping.Assessment:
    thresholds = runbook(**kw)  # type: ignore[arg-type]
    return mapping.assess(thresholds, labels, annotations or {})


class TestSeverity:
    @pytest.mark.parametrize(
        ("value", "severity", "level"),
        [("7.5", "P1", "critical"), ("2.3", "P2", "warning"), ("2.3 %", "P2", "warning")],
    )
    def test_a_measured_value_is_graded_by_the_alerts_threshold(
        self, value: str, severity: str, level: str
    ) -> None:
        # The label says warning; the value decides.
        found = assess({"alertname": "HighErrorRate", "severity": "warning"}, {"value": value})
        assert (found.severity, found.threshold, found.level) == (severity, "error_rate", level)

    def test_without_a_value_the_label_names_the_thresholds_level(self) -> None:
        found = assess({"alertname": "HighLatency", "severity": "critical"})
        assert (found.severity, found.threshold, found.level) == ("P1", "latency_p95", "critical")

    def test_a_value_below_the_levels_falls_back_to_the_label(self) -> None:
        found = assess({"alertname": "HighErrorRate", "severity": "warning"}, {"value": "0.2"})
        assert (found.severity, found.level) == ("P2", "warning")

    def test_the_threshold_label_names_the_threshold(self) -> None:
        found = assess({"alertname": "Whatever", "threshold": "disk"}, {"value": "96"})
        assert (found.severity, found.threshold) == ("P1", "disk")

    def test_the_thresholds_own_severities_are_used(self) -> None:
        found = assess(
            {"alertname": "HighErrorRate"},
            {"value": "9"},
            error_rate={"critical_severity": "P0"},
        )
        assert found.severity == "P0"

    @pytest.mark.parametrize(
        ("label", "severity"),
        [("critical", "P1"), ("CRITICAL", "P1"), ("warning", "P2"), ("info", "P3"), ("", "P3")],
    )
    def test_without_a_threshold_the_severity_label_maps(self, label: str, severity: str) -> None:
        found = assess({"alertname": "SomethingElse", "severity": label})
        assert (found.severity, found.threshold) == (severity, None)

    @pytest.mark.parametrize("label", ["P0", "p0", "page", "emergency", "disaster"])
    def test_no_label_reaches_p0(self, label: str) -> None:
        assert assess({"alertname": "SomethingElse", "severity": label}).severity == "P3"

    def test_an_unreadable_value_is_not_graded(self) -> None:
        found = assess({"alertname": "HighErrorRate", "severity": "warning"}, {"value": "nan"})
        assert found.level == "warning"
        assert mapping.measured({"value": "inf"}, "value") is None
        assert mapping.measured({"value": "high"}, "value") is None
        assert mapping.measured({"value": " 1.5e1 "}, "value") == 15.0

    def test_highest_is_the_most_severe(self) -> None:
        assert mapping.highest(["P3", "P1", "P2"]) == "P1"
        assert mapping.highest([]) == "P3"


COMPONENTS = [
    ComponentRef(id="c-api", name="Backend API", services=("production/backend", "local/backend")),
    ComponentRef(id="c-web", name="Frontend", services=("production/frontend",)),
    ComponentRef(id="c-db", name="Database", services=()),
]


class TestComponents:
    def test_the_component_label_names_one_case_insensitively(self) -> None:
        assert mapping.components_for({"component": "backend api"}, COMPONENTS) == ["c-api"]

    def test_an_unknown_component_label_matches_none(self) -> None:
        assert mapping.components_for({"component": "Nope", "service": "backend"}, COMPONENTS) == []

    def test_service_and_environment_match_the_components_services(self) -> None:
        labels = {"service": "backend", "environment": "local"}
        assert mapping.components_for(labels, COMPONENTS) == ["c-api"]
        labels = {"service": "frontend", "environment": "local"}
        assert mapping.components_for(labels, COMPONENTS) == []

    def test_a_service_without_environment_matches_it_anywhere(self) -> None:
        assert mapping.components_for({"service": "frontend"}, COMPONENTS) == ["c-web"]

    def test_no_labels_no_components(self) -> None:
        assert mapping.components_for({"alertname": "X", "instance": "h:9"}, COMPONENTS) == []

    def test_the_worst_status_wins(self) -> None:
        statuses = mapping.component_statuses([("P2", ["c-api"]), ("P1", ["c-api", "c-db"])])
        assert statuses == {"c-api": "partial_outage", "c-db": "partial_outage"}


class TestIdentity:
    def test_alertmanagers_fingerprint_is_kept(self) -> None:
        assert mapping.fingerprint("1a30ba71cca2921f", {"a": "b"}) == "1a30ba71cca2921f"

    def test_without_one_the_labels_make_a_stable_one(self) -> None:
        one = mapping.fingerprint(None, {"alertname": "X", "job": "y"})
        assert one == mapping.fingerprint("", {"job": "y", "alertname": "X"})
        assert one != mapping.fingerprint(None, {"alertname": "X", "job": "z"})
        assert len(one) <= 64

    def test_gos_zero_time_is_no_time(self) -> None:
        assert mapping.moment(dt.datetime(1, 1, 1, tzinfo=dt.UTC)) is None
        naive = mapping.moment(dt.datetime(2026, 1, 2, 3, 4, 5))
        assert naive == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        offset = dt.timezone(dt.timedelta(hours=2))
        assert mapping.moment(dt.datetime(2026, 1, 2, 5, tzinfo=offset)) == dt.datetime(
            2026, 1, 2, 3, tzinfo=dt.UTC
        )


def test_fields_are_read_by_alertmanagers_names_only() -> None:
    """Alertmanager's names (`generatorURL`, `groupKey`) are the fields; the Python names
    (`generator_url`) are unknown keys like any other, ignored as the schema says (a
    schema-valid notification with `"generator_url": []` in an alert was refused 422)."""
    body = payloads.firing()
    body["alerts"][0]["generator_url"] = []
    body["alerts"][0]["starts_at"] = "not a time"
    body["group_key"] = 7
    notification = AlertmanagerNotification.model_validate(body)
    assert notification.alerts[0].generator_url == body["alerts"][0]["generatorURL"]
    assert notification.group_key == body["groupKey"]
    del body["groupKey"]
    body["group_key"] = '{}:{alertname="x"}'
    with pytest.raises(ValidationError):
        AlertmanagerNotification.model_validate(body)
