"""The README's configuration table names every setting: each field of ``Settings``
(nested groups with ``__``) and the command line's own variables, and nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.bootstrap import build_registry
from app.cli.client import TOKEN_VARIABLE, URL_VARIABLE
from app.core.settings import Settings
from app.outbox.catalog import EVENT_TYPES

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `(FORMULA_OPS_[A-Z0-9_]+)` \|")


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section of a Markdown document."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def setting_variables(model: type[BaseModel], prefix: str = "FORMULA_OPS_") -> set[str]:
    """Every environment variable ``model`` reads: one per field, nested models' fields
    under ``<FIELD>__``."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_variables(annotation, variable + "__")
        else:
            names.add(variable)
    return names


def table_variables() -> list[str]:
    lines = section(README.read_text(), "Configuration").splitlines()
    return [m.group(1) for line in lines if (m := ROW.match(line))]


def test_the_walk_finds_nested_groups() -> None:
    found = setting_variables(Settings)
    assert "FORMULA_OPS_PORT" in found
    assert "FORMULA_OPS_HEALTH_CHECK__DISK_PATHS" in found
    assert "FORMULA_OPS_HEALTH_CHECK" not in found


def test_every_variable_is_in_the_configuration_table() -> None:
    expected = setting_variables(Settings) | {URL_VARIABLE, TOKEN_VARIABLE}
    listed = table_variables()
    missing = sorted(expected - set(listed))
    assert not missing, f"README.md's configuration table lacks rows for {missing}"
    unknown = sorted(set(listed) - expected)
    assert not unknown, f"README.md's configuration table lists unknown variables {unknown}"
    assert len(listed) == len(set(listed)), "a variable has two rows"


# -- the README names only what exists ------------------------------------------------

OPENAPI = README.parent / "openapi" / "openapi.json"
API_PATH = re.compile(r"/v1/[A-Za-z0-9_\-{}<>/.]+")
COMMAND_SPAN = re.compile(r"`((?:formula-ops )?[a-z][^`]*)`")
OPTION = re.compile(r"--[a-z][a-z-]*")
# Named in the runbook but not built: no route may exist for them (see "Not yet").
NOT_YET = ("oidc", "sso")


def _segments_match(named: str, route: str) -> bool:
    a, b = named.strip("/").split("/"), route.strip("/").split("/")
    placeholder = re.compile(r"^(\{[^}]*\}|<[^>]*>)$")
    return len(a) == len(b) and all(
        x == y or placeholder.match(x) or placeholder.match(y) for x, y in zip(a, b, strict=True)
    )


def test_every_api_path_the_readme_names_exists() -> None:
    routes = list(json.loads(OPENAPI.read_text())["paths"])
    named = {m.rstrip(".") for m in API_PATH.findall(README.read_text()) if "..." not in m}
    assert "/v1/tokens/review" in named  # the walk finds them
    unknown = sorted(p for p in named if not any(_segments_match(p, r) for r in routes))
    assert not unknown, f"README.md names API paths that do not exist: {unknown}"


def test_nothing_of_the_not_yet_list_has_a_route() -> None:
    routes = json.loads(OPENAPI.read_text())["paths"]
    built = sorted(r for r in routes for word in NOT_YET if word in r)
    assert not built, f"routes exist for what README.md lists as not yet built: {built}"
    not_yet = section(README.read_text(), "Not yet")
    for word in ("single sign-on (OIDC)",):
        assert word in not_yet


def _table_commands() -> list[list[str]]:
    """Each command of the "Command line" table as its words and options."""
    found = []
    for line in section(README.read_text(), "Command line").splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ")[0]
        for span in COMMAND_SPAN.findall(first_cell):
            words = span.removeprefix("formula-ops ").split()
            found.append(words)
    return found


def test_every_command_and_option_of_the_command_line_table_exists() -> None:
    import typer

    from app.cli.main import cli

    root: Any = typer.main.get_command(cli)
    commands = _table_commands()
    assert ["tokens", "list"] in [c[:2] for c in commands]  # the walk finds the second spans
    for words in commands:
        command: Any = root
        path: list[str] = []
        for word in words:
            if not hasattr(command, "commands") or not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            sub = command.commands.get(word)
            assert sub is not None, f"README.md names `formula-ops {' '.join([*path, word])}`"
            command, path = sub, [*path, word]
        assert not hasattr(command, "commands"), f"`{' '.join(words)}` is not a command"
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        for option in OPTION.findall(" ".join(words)):
            assert option in options, f"`formula-ops {' '.join(path)}` has no {option}"


# -- the event table is the event catalog ------------------------------------------------

EVENT_ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| (.+) \|$")


def test_the_events_table_is_the_event_catalog() -> None:
    text = README.read_text()
    start = text.index("\n### Events\n")
    body = text[start : text.index("\n#", start + 1)]
    rows = (EVENT_ROW.match(line) for line in body.splitlines())
    listed = [(m.group(1), m.group(2)) for m in rows if m]
    expected = [(name, event.summary) for name, event in build_registry()[EVENT_TYPES].items()]
    table = "\n".join(f"| `{name}` | {summary} |" for name, summary in expected)
    assert listed == expected, f"README.md's events table should read:\n{table}"
