"""Loading the catalog: a bad file is an error naming its file, line and field; the
shipped catalog loads; parameters are checked as typed data."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bootstrap import build_registry
from app.core.errors import ValidationFailed
from app.core.settings import RunbookSettings
from app.runbooks import plan
from app.runbooks.catalog import CatalogError, load_catalog

REGISTRY = build_registry()

GOOD = """\
name: sample
title: A sample
kind: maintenance
parameters:
  environment: {type: string, pattern: "^[a-z]+$"}
  days: {type: integer, minimum: 1, maximum: 30, default: 7}
  force: {type: boolean, default: false}
steps:
  - name: list
    action: shell
    with: {argv: [ls, {param: environment}]}
  - name: only when forced
    action: wait
    when: {param: force, equals: true}
    with: {seconds: {param: days}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def problems(folder: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog([folder], REGISTRY)
    return caught.value.problems


def test_a_good_file_loads(tmp_path: Path) -> None:
    write(tmp_path, "sample", GOOD)
    catalog = load_catalog([tmp_path], REGISTRY)
    runbook = catalog.get("sample")
    assert runbook is not None
    assert runbook.source == f"{tmp_path.name}/sample.yaml"
    assert runbook.spec.parameters_schema()["required"] == ["environment"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An unknown action, on its line.
        (GOOD.replace("action: wait", "action: waitt"), ":13: steps.1.action: no step action"),
        # A reference to an undeclared parameter.
        (GOOD.replace("{param: days}", "{param: dayz}"), ":15: steps.1.with.seconds: no parameter"),
        # A field the schema does not know.
        (GOOD.replace("kind: maintenance", "kind: maintenance\ncolour: red"), ":4: colour:"),
        # A bad type of parameter.
        (GOOD.replace("type: integer", "type: float"), ":6: parameters.days"),
        # An argument the action refuses (not a reference): wait's seconds must be >= 0.
        (GOOD.replace("{seconds: {param: days}}", "{seconds: -1}"), ":15: steps.1.with.seconds"),
        # A key given twice.
        (
            GOOD.replace("title: A sample", "title: A sample\ntitle: Again"),
            ":3: title: given twice",
        ),
        # A pattern that is not anchored.
        (GOOD.replace('"^[a-z]+$"', '"[a-z]+"'), ":5: parameters.environment.pattern"),
        # A writing sql step in a runbook that does not say it writes.
        (GOOD.replace("role: operator", ""), None),
    ],
)
def test_a_bad_file_names_file_line_and_field(
    tmp_path: Path, text: str, expected: str | None
) -> None:
    write(tmp_path, "sample", text)
    if expected is None:
        load_catalog([tmp_path], REGISTRY)  # the default role is fine
        return
    found = problems(tmp_path)
    assert any(p.startswith(f"{tmp_path.name}/sample.yaml") and expected in p for p in found), found


def test_writes_need_admin_and_name_matches_file(tmp_path: Path) -> None:
    write(tmp_path, "sample", GOOD.replace("kind: maintenance", "kind: maintenance\nwrites: true"))
    found = problems(tmp_path)
    assert any("a runbook that writes must require the admin role" in p for p in found), found
    write(tmp_path, "sample", GOOD.replace("name: sample", "name: other"))
    found = problems(tmp_path)
    assert any("sample.yaml:1: name: 'other' differs from the file's name" in p for p in found)


def test_not_yaml_and_duplicates_across_files(tmp_path: Path) -> None:
    write(tmp_path, "broken", "name: [unclosed\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sample", GOOD)
    write(tmp_path / "sub", "sample", GOOD)
    found = problems(tmp_path)
    assert any("broken.yaml:" in p and "not valid YAML" in p for p in found), found
    assert any("is also in" in p for p in found), found


def test_parameters_are_typed_and_never_echoed(tmp_path: Path) -> None:
    write(tmp_path, "sample", GOOD)
    runbook = load_catalog([tmp_path], REGISTRY).entries["sample"]
    assert runbook.check_parameters({"environment": "prod"}) == {
        "environment": "prod",
        "days": 7,
        "force": False,
    }
    for bad in (
        {"environment": "prod; rm -rf /"},
        {"environment": "prod", "days": "7"},
        {"environment": "prod", "days": 31},
        {"environment": "prod", "force": 1},
        {"environment": "prod", "extra": "x"},
        {},
    ):
        with pytest.raises(ValidationFailed) as caught:
            runbook.check_parameters(bad)
        assert caught.value.errors
        assert "rm -rf" not in str(caught.value.errors)


def test_plan_substitutes_values_as_data_and_applies_when(tmp_path: Path) -> None:
    write(tmp_path, "sample", GOOD)
    runbook = load_catalog([tmp_path], REGISTRY).entries["sample"]
    payload = "$(touch /tmp/x); `id` && echo"
    values = runbook.check_parameters({"environment": "prod", "force": True, "days": 3})
    steps = plan.steps(runbook, {**values, "environment": payload})
    assert steps[0].params["argv"] == ["ls", payload]  # one argv element, untouched
    assert steps[1].params == {"seconds": 3}
    values = runbook.check_parameters({"environment": "prod"})
    assert [s.name for s in plan.steps(runbook, values)] == ["list"]


def test_the_shipped_catalog_loads() -> None:
    catalog = load_catalog(RunbookSettings().catalog_dirs, REGISTRY)
    for runbook in catalog.runbooks():
        assert runbook.source.startswith("runbooks/")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ('{cron: "0 25 * * *"}', "schedule"),
        ('{cron: "0 4 * * *", timezone: Mars/Olympus}', "schedule"),
        ('{cron: "0 4 * * *", parameters: {environment: "no way"}}', "default schedule's"),
    ],
)
def test_a_default_schedule_is_checked_at_load(
    tmp_path: Path, schedule: str, expected: str
) -> None:
    write(tmp_path, "sample", GOOD.replace("steps:", f"schedule: {schedule}\nsteps:", 1))
    found = problems(tmp_path)
    assert any(expected in p for p in found), found
