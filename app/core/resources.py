"""Long-lived objects a package keeps for the life of an application context (a pool
of driver instances, later clients of other systems), addressed by typed keys defined
by their package, and closed with the context (last added, first closed)."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def aclose(self) -> None: ...


R = TypeVar("R", bound=Closable)


class ResourceKey(Generic[R]):
    """The typed address of one resource; keys compare by identity."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"ResourceKey({self.what!r})"


class MissingResource(LookupError):
    """The context was built without this resource."""


class Resources:
    def __init__(self) -> None:
        self._items: dict[ResourceKey[Closable], Closable] = {}

    def add(self, key: ResourceKey[R], resource: R) -> R:
        if key in self._items:
            raise ValueError(f"the {key.what} is already set")
        self._items[key] = resource  # type: ignore[index]
        return resource

    def __getitem__(self, key: ResourceKey[R]) -> R:
        try:
            return self._items[key]  # type: ignore[index, return-value]
        except KeyError:
            raise MissingResource(
                f"this application context has no {key.what} (build it with "
                "app.bootstrap.build_context)"
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    async def aclose(self) -> None:
        items, self._items = list(self._items.values()), {}
        for resource in reversed(items):
            await resource.aclose()
