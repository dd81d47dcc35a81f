"""The README's configuration table names every setting: each field of ``Settings``
(nested groups with ``__``) and the command line's own variables, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from app.client import TOKEN_VARIABLE, URL_VARIABLE
from app.settings import Settings

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
