"""What the domains contribute (run kinds, step actions, drivers…), registered once at
start-up by the composition root (:mod:`app.bootstrap`), then frozen.

A :class:`Registry` holds one :class:`Catalog` per :class:`CatalogKey`. A key is typed
and defined by the package that owns the concept (``KINDS`` in :mod:`app.runs.kinds`,
``DRIVERS`` in :mod:`app.drivers.base`), so this module knows no domain::

    KINDS: CatalogKey[KindHooks] = CatalogKey("run kind")
    registry[KINDS].add("deployment", KindHooks(...))
    registry[KINDS].get("deployment")  # -> KindHooks; NotRegistered names what is missing

Nothing registers at import time: each domain's ``register(registry)`` adds its entries
when the composition root calls it, and :meth:`Registry.freeze` ends registration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(Exception):
    """Base of the registry's errors (programming errors, not bad input)."""


class NotRegistered(RegistryError, LookupError):
    """A name was looked up that nothing registered."""


class AlreadyRegistered(RegistryError, ValueError):
    """A name was registered twice in one catalog."""


class RegistryFrozen(RegistryError, RuntimeError):
    """Registration after start-up (the registry is read-only once built)."""


class CatalogKey(Generic[T]):
    """The typed address of a catalog; ``what`` names its entries in messages
    ("step action", "driver"). Keys compare by identity: define each once."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"CatalogKey({self.what!r})"


class Catalog(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._frozen = False

    def add(self, name: str, entry: T) -> T:
        if self._frozen:
            raise RegistryFrozen(f"cannot register {self.what} {name!r}: the registry is frozen")
        if name in self._entries:
            raise AlreadyRegistered(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise NotRegistered(
                f"no {self.what} {name!r} is registered (registered: {known})"
            ) from None

    def find(self, name: str) -> T | None:
        return self._entries.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def values(self) -> tuple[T, ...]:
        return tuple(self._entries.values())

    def items(self) -> tuple[tuple[str, T], ...]:
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Catalog of {self.what}: {', '.join(self._entries)}>"

    def freeze(self) -> None:
        self._frozen = True


class Registry:
    """The catalogs of one application (built by :func:`app.bootstrap.build_registry`)."""

    def __init__(self) -> None:
        self._catalogs: dict[CatalogKey[object], Catalog[object]] = {}
        self._frozen = False

    def __getitem__(self, key: CatalogKey[T]) -> Catalog[T]:
        catalog = self._catalogs.get(key)  # type: ignore[arg-type]
        if catalog is None:
            catalog = Catalog(key.what)
            if self._frozen:
                catalog.freeze()  # nothing registered one: an empty, read-only catalog
            self._catalogs[key] = catalog  # type: ignore[index]
        return catalog  # type: ignore[return-value]

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> Registry:
        """End registration: every catalog, present and future, is read-only."""
        self._frozen = True
        for catalog in self._catalogs.values():
            catalog.freeze()
        return self
