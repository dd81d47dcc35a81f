"""Loading the catalog: every ``*.yaml`` under the configured folders, validated at
start-up against :class:`app.runbooks.spec.RunbookSpec` and the registered step actions.

A bad file stops the start with one message per problem naming the file, the line and
the field (``runbooks/formula-pm/x.yaml:12: steps.2.action: no step action 'sqll'``).
The catalog is data the administrator controls (it holds the commands and queries); API
callers only choose a runbook and give its parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from app.core.context import AppContext
from app.core.registry import Registry
from app.core.resources import ResourceKey
from app.runbooks.spec import RunbookSpec, StepDefinition
from app.runs.actions import ACTIONS

MAX_FILE_BYTES = 256 * 1024
# libyaml's parser where PyYAML was built with it (the same YAML, several times faster).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CatalogError(Exception):
    """The catalog cannot be loaded; ``problems`` are ``file:line: field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "the runbook catalog is invalid:\n" + "\n".join(f"  {p}" for p in self.problems)
        )


@dataclass(frozen=True)
class Runbook:
    """A validated runbook and where it came from."""

    spec: RunbookSpec
    source: str  # the file, relative to its catalog folder

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def schedule(self) -> Any:
        return self.spec.schedule

    @property
    def role(self) -> Any:
        return self.spec.required_role

    def check_parameters(self, values: dict[str, Any]) -> dict[str, Any]:
        return self.spec.check_parameters(values)


@dataclass
class RunbookCatalog:
    """The loaded runbooks by name (kept for the life of the application context)."""

    entries: dict[str, Runbook] = field(default_factory=dict)

    def get(self, name: str) -> Runbook | None:
        return self.entries.get(name)

    def runbooks(self) -> list[Runbook]:
        return [self.entries[name] for name in sorted(self.entries)]

    async def aclose(self) -> None:
        """Nothing to release (a resource of the context)."""


RUNBOOK_CATALOG: ResourceKey[RunbookCatalog] = ResourceKey("runbook catalog")


def catalog_of(context: AppContext) -> RunbookCatalog:
    """The context's catalog (loaded by :func:`app.bootstrap.build_context`)."""
    return context.resources[RUNBOOK_CATALOG]


# -- where a problem is ------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: Iterable[Any]) -> yaml.Node | None:
    """The deepest node of ``root`` on the path ``loc`` (mapping keys, sequence indexes)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            key = "with" if part == "with_" else ("in" if part == "in_" else part)
            found = [v for k, v in node.value if getattr(k, "value", None) == str(key)]
            if not found:
                break
            node = found[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        else:
            break
    return node


def _line(root: yaml.Node | None, loc: Iterable[Any]) -> int:
    node = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else 1


def _duplicate_keys(node: yaml.Node | None, path: tuple[Any, ...] = ()) -> list[tuple[int, str]]:
    """Keys given twice in one mapping (YAML keeps the last silently; we refuse)."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(getattr(key, "value", ""))
            if name in seen:
                where = ".".join(str(p) for p in (*path, name))
                found.append((key.start_mark.line + 1, f"{where}: given twice"))
            seen.add(name)
            found += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, index))
    return found


def _field(loc: Iterable[Any]) -> str:
    parts = ["with" if p == "with_" else "in" if p == "in_" else str(p) for p in loc]
    # pydantic names the member of a tagged union it tried ("string", "integer"…).
    return ".".join(p for p in parts if p not in ("string", "integer", "boolean")) or "(file)"


# -- checking steps against the registered actions ---------------------------------------


def references(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Every ``{param: NAME}`` in a step's arguments: (where, the parameter's name)."""
    if isinstance(value, dict):
        if set(value) == {"param"} and isinstance(value["param"], str):
            return [(path, value["param"])]
        return [ref for k, v in value.items() for ref in references(v, (*path, k))]
    if isinstance(value, list):
        return [ref for i, v in enumerate(value) for ref in references(v, (*path, i))]
    return []


def substitute(value: Any, values: dict[str, Any]) -> Any:
    """``value`` with each ``{param: NAME}`` replaced by ``values[NAME]`` (as data)."""
    if isinstance(value, dict):
        if set(value) == {"param"} and isinstance(value["param"], str):
            return values[value["param"]]
        return {k: substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    return value


def _step_problems(
    spec: RunbookSpec, position: int, step: StepDefinition, registry: Registry
) -> list[tuple[tuple[Any, ...], str]]:
    """(where, what) for one step: its action exists, its references name declared
    parameters, and its arguments fit the action (a referenced value is checked when a
    run is planned, with the caller's value)."""
    where: tuple[Any, ...] = ("steps", position)
    action = registry[ACTIONS].find(step.action)
    if action is None:
        known = ", ".join(sorted(registry[ACTIONS].names()))
        return [((*where, "action"), f"no step action {step.action!r} (registered: {known})")]
    problems: list[tuple[tuple[Any, ...], str]] = []
    refs = references(step.with_)
    for path, name in refs:
        if name not in spec.parameters:
            problems.append(((*where, "with", *path), f"no parameter {name!r} is declared"))
    if step.when is not None and step.when.param not in spec.parameters:
        problems.append(((*where, "when", "param"), f"no parameter {step.when.param!r}"))
    if problems:
        return problems
    samples = {name: p.sample() for name, p in spec.parameters.items()}
    arguments = substitute(step.with_, samples)
    if step.action == "sql" and arguments.get("write") and not spec.writes:
        problems.append(((*where, "with", "write"), "a write step needs `writes: true`"))
    params: type[BaseModel] = action.params
    try:
        params.model_validate(arguments)
    except ValidationError as exc:
        referenced = {path for path, _ in refs}
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            if any(loc[: len(r)] == r for r in referenced):
                continue  # depends on the caller's value: checked when planned
            problems.append(((*where, "with", *loc), error["msg"]))
    return problems


# -- loading -----------------------------------------------------------------------------


def _first_alias(text: str) -> yaml.Token | None:
    """The first alias of ``text``, read token by token (linear). An alias shares a node:
    a few lines of them make a graph that every walk of the file (ours, pydantic's)
    expands exponentially, or a cycle that no walk ends (the start-up would hang or
    crash); the catalog needs none."""
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, yaml.AliasToken):
            return token
    return None


def _load_file(path: Path, shown: str, registry: Registry) -> tuple[Runbook | None, list[str]]:
    if path.stat().st_size > MAX_FILE_BYTES:
        return None, [f"{shown}:1: (file): larger than {MAX_FILE_BYTES} bytes"]
    text = path.read_text(encoding="utf-8")
    try:
        alias = _first_alias(text)
        if alias is not None:
            return None, [
                f"{shown}:{alias.start_mark.line + 1}: (file): aliases (*name) are not "
                "allowed: write the value out"
            ]
        root = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        return None, [f"{shown}:{line}: (file): not valid YAML: {getattr(exc, 'problem', exc)}"]
    problems = [f"{shown}:{line}: {what}" for line, what in _duplicate_keys(root)]
    if not isinstance(data, dict):
        return None, [*problems, f"{shown}:1: (file): a runbook is a mapping"]
    try:
        spec = RunbookSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            problems.append(f"{shown}:{_line(root, loc)}: {_field(loc)}: {error['msg']}")
        return None, problems
    for position, step in enumerate(spec.steps):
        for loc, what in _step_problems(spec, position, step, registry):
            problems.append(f"{shown}:{_line(root, loc)}: {_field(loc)}: {what}")
    if path.stem != spec.name:
        problems.append(
            f"{shown}:{_line(root, ('name',))}: name: {spec.name!r} differs from the file's "
            f"name {path.stem!r}"
        )
    return (None if problems else Runbook(spec, shown)), problems


# The catalogs loaded by this process: the same files (paths, sizes, modification times)
# validated against the same registry are not parsed again (every application context a
# process builds loads the catalog; tests build many).
_LOADED: dict[tuple[object, ...], RunbookCatalog] = {}


def _fingerprint(folders: Sequence[Path], registry: Registry) -> tuple[object, ...] | None:
    try:
        files = tuple(
            (str(path), path.stat().st_mtime_ns, path.stat().st_size)
            for folder in folders
            if folder.is_dir()
            for path in sorted(folder.rglob("*.yaml"))
        )
    except OSError:
        return None
    actions = tuple((name, id(action.params)) for name, action in registry[ACTIONS].items())
    return (actions, tuple(str(f) for f in folders), files)


def load_catalog(folders: Sequence[Path], registry: Registry) -> RunbookCatalog:
    """Every runbook under ``folders``; :class:`CatalogError` listing every problem."""
    key = _fingerprint(folders, registry)
    cached = _LOADED.get(key) if key is not None else None
    if cached is not None:
        return cached
    catalog = _load(folders, registry)
    if key is not None:
        _LOADED[key] = catalog
    return catalog


def _load(folders: Sequence[Path], registry: Registry) -> RunbookCatalog:
    catalog = RunbookCatalog()
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            problems.append(f"{folder}: (folder): not a folder")
            continue
        for path in sorted(folder.rglob("*.yaml")):
            shown = str(path.relative_to(folder.parent)) if folder.parent != folder else str(path)
            runbook, found = _load_file(path, shown, registry)
            problems += found
            if runbook is None:
                continue
            other = catalog.entries.get(runbook.name)
            if other is not None:
                problems.append(f"{shown}:1: name: {runbook.name!r} is also in {other.source}")
                continue
            catalog.entries[runbook.name] = runbook
    if problems:
        raise CatalogError(problems)
    return catalog
