"""Name → class registries that the plugin host fills from hook results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from radseg.errors import NotRegisteredError, PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes keyed by their ``name``, remembering which plugin gave each one.

    >>> r: Registry[type] = Registry("exporter")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[T, str]] = {}

    def add(self, name: str, item: T, plugin: str) -> None:
        if not name or not isinstance(name, str):
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a string name")
        if name in self._items:
            other = self._items[name][1]
            raise PluginError(
                f"{self.kind} {name!r} is registered by both plugin {other!r} and plugin "
                f"{plugin!r}; disable one of them (radseg plugins disable NAME)"
            )
        self._items[name] = (item, plugin)

    def get(self, name: str) -> T:
        try:
            return self._items[name][0]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "none (is the plugin enabled?)"
            raise NotRegisteredError(
                f"{self.kind} {name!r} is not registered! Available {self.kind}s are: {valid}"
            ) from None

    def plugin_of(self, name: str) -> str:
        self.get(name)
        return self._items[name][1]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
