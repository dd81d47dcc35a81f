"""Formula Ops: the operations runbook as a versioned, queued, audited REST API."""

import importlib
import importlib.util
import sys
import types
from typing import Any

__version__ = "0.1.0"

# Imported by a library at its own import and used by nothing Formula Ops does: each is
# loaded at its first use instead (bench/README.md, idle RSS). redis-py imports PyJWT, and
# through it cryptography's X.509 modules (about 5 MB resident in every process), for the
# token-based authentication of managed Redis services; Formula Ops authenticates with the
# URL's password.
DEFERRED_IMPORTS = ("jwt",)


def _defer(name: str) -> None:
    """Put a stand-in for ``name`` in ``sys.modules``: ``import name`` binds it, and its
    first attribute read imports the real module (which then replaces it there) and
    answers from it. (``importlib.util.LazyLoader`` does not do: Python 3.11's ``import``
    statement reads the module's ``__spec__``, which loads a lazy module at once.)"""
    spec = importlib.util.find_spec(name)
    if name in sys.modules or spec is None:
        return
    stand_in = types.ModuleType(name, f"{name}: imported at its first use")
    stand_in.__spec__ = spec

    def load(attribute: str) -> Any:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules[name] = stand_in


for _name in DEFERRED_IMPORTS:
    _defer(_name)
