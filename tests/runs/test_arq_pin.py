"""``workers/wake.py`` subclasses arq's ``Worker`` and relies on its internals (its poll
iteration, slot counting, job bookkeeping): arq has no public API for waking a worker
on enqueue or for riding out Redis outages. So pyproject pins the exact arq version, and
this test fails when another one is installed, or when the worker starts to rely on an
internal that is not recorded here: an upgrade means reading the new ``arq/worker.py``
against ``WakeableWorker``, then recording the new version and source hashes."""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import tomllib

import arq
from arq.worker import Worker

from tests.helpers import REPO_ROOT

# Worker members that WakeableWorker overrides or calls, with the sha256 (first 16 hex
# digits) of their source in the pinned version.
RELIED_ON = {
    "__init__": "edfb0cd7e05e77cf",
    "main": "45ca1591c9717466",
    "_poll_iteration": "f8d39d823a0a59f2",
    "start_jobs": "b45797cfa40bed7f",
    "run_job": "589a19059ff84ee7",
    "close": "5bcc9cb356680829",
    "_cancel_aborted_jobs": "54575eaf8682f95b",
    "_jobs_started": "c5643370c110c7cd",
    "_release_sem_dec_counter_on_complete": "0ed101482e942c33",
    "heart_beat": "2e9959bea66dc551",
}


def _source_hash(name: str) -> str:
    source = inspect.getsource(getattr(Worker, name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _worker_members_used() -> set[str]:
    """Every callable member of arq's Worker that workers/wake.py names (``self.x``,
    ``super().x``, or a method of the same name)."""
    tree = ast.parse((REPO_ROOT / "workers" / "wake.py").read_text())
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return {name for name in names if callable(getattr(Worker, name, None))}


def test_the_installed_arq_is_the_pinned_one() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in project["project"]["dependencies"] if re.match(r"arq\b", d)]
    assert pin == f"arq=={arq.VERSION}", (pin, arq.VERSION)


def test_every_internal_the_worker_relies_on_is_recorded() -> None:
    assert _worker_members_used() == set(RELIED_ON)


def test_the_internals_are_those_of_the_pinned_version() -> None:
    changed = {name for name, digest in RELIED_ON.items() if _source_hash(name) != digest}
    assert not changed, f"arq {arq.VERSION} changed {sorted(changed)}: review workers/wake.py"
