"""Connector factories by short name, filled once from the ``switchyard.connectors``
entry-point group and frozen after that. Tests add their own factories explicitly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from connectors.base import ConnectorFactory
from core.errors import UnknownConnector

GROUP = "switchyard.connectors"


class ConnectorRegistry(Mapping[str, ConnectorFactory]):
    def __init__(self, factories: Iterable[ConnectorFactory]) -> None:
        by_name: dict[str, ConnectorFactory] = {}
        for factory in factories:
            if factory.name in by_name:
                raise ValueError(f"two connectors registered as {factory.name!r}")
            by_name[factory.name] = factory
        self._factories = MappingProxyType(by_name)

    @classmethod
    def from_entry_points(cls, extra: Iterable[ConnectorFactory] = ()) -> ConnectorRegistry:
        loaded = [ep.load()() for ep in entry_points(group=GROUP)]
        return cls([*loaded, *extra])

    def __getitem__(self, name: str) -> ConnectorFactory:
        return self._factories[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def require(self, name: str) -> ConnectorFactory:
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise UnknownConnector(f"no connector {name!r}; installed: {known}") from None
