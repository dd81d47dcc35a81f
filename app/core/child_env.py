"""The environment of every program this service starts (``shell`` steps, smoke-test
commands, ``process`` services): an allowlist of the host's variables plus what the
step or service declares — never the worker's settings (``FORMULA_OPS_*``), which hold
the control plane's credentials, nor anything else the worker happened to inherit."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Passed through from the worker's environment when set.
INHERITED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
INHERITED_PREFIXES = ("LC_",)
HIDDEN_PREFIX = "FORMULA_OPS_"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def child_env(declared: Mapping[str, str] | None = None) -> dict[str, str]:
    """``PATH``, ``HOME``, ``LANG``, ``LANGUAGE``, ``TZ``, ``TMPDIR`` and ``LC_*`` of the
    worker, then ``declared``; a declared ``FORMULA_OPS_*`` name is dropped too."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in INHERITED or name.startswith(INHERITED_PREFIXES)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(declared or {})
    return {name: value for name, value in env.items() if not name.startswith(HIDDEN_PREFIX)}
