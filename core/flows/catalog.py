"""The flow catalog: which flows exist and which change events each one matches.

A flow lives in ``mappings/<platform>/<flow>.yaml`` and is named ``<platform>/<flow>``.
This module reads the ``source`` section, which decides matching at ingress; the sections
that drive the engine (inputs, task, output, writeback, review) are parsed by the flow
engine and are passed through here untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.base import ChangeEvent, ChangeType
from core.errors import SettingsError


class FlowSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: str
    object: str
    change_types: list[ChangeType] = Field(
        default_factory=lambda: [ChangeType.CREATED, ChangeType.UPDATED]
    )
    when_changed: list[str] = Field(
        default_factory=list,
        description="Updates match only when one of these fields changed (empty: any).",
    )

    def matches(self, connector: str, event: ChangeEvent) -> bool:
        if connector != self.connector or event.object != self.object:
            return False
        if event.change_type not in self.change_types:
            return False
        if event.change_type is ChangeType.UPDATED and self.when_changed:
            return bool(set(self.when_changed) & set(event.changed_fields))
        return True


class FlowHeader(BaseModel):
    """The part of a flow file the catalog needs; the rest is kept as ``body``."""

    model_config = ConfigDict(extra="allow")

    description: str = ""
    source: FlowSource


class FlowEntry(BaseModel):
    name: str
    path: str
    header: FlowHeader


class FlowCatalog:
    def __init__(self, entries: Iterable[FlowEntry] = ()) -> None:
        self._flows: dict[str, FlowEntry] = {entry.name: entry for entry in entries}

    @classmethod
    def load(cls, root: Path) -> FlowCatalog:
        """Read every ``*.yaml`` under ``root/<platform>/``; a broken file stops the start."""
        entries = []
        for path in sorted(root.glob("*/*.yaml")):
            name = f"{path.parent.name}/{path.stem}"
            try:
                raw: Any = yaml.safe_load(path.read_text())
                header = FlowHeader.model_validate(raw)
            except (yaml.YAMLError, ValidationError) as exc:
                raise SettingsError(f"flow {name} ({path}) is invalid: {exc}") from None
            entries.append(FlowEntry(name=name, path=str(path), header=header))
        return cls(entries)

    def __contains__(self, name: object) -> bool:
        return name in self._flows

    def get(self, name: str) -> FlowEntry | None:
        return self._flows.get(name)

    def names(self) -> list[str]:
        return sorted(self._flows)

    def for_connector(self, connector: str) -> list[str]:
        """Names of the flows whose source is ``connector``, in name order."""
        return [
            name
            for name, entry in sorted(self._flows.items())
            if entry.header.source.connector == connector
        ]

    def matching(
        self, connector: str, event: ChangeEvent, enabled: Mapping[str, bool]
    ) -> list[str]:
        """Enabled flows whose source matches ``event``, in name order."""
        return [
            name
            for name, entry in sorted(self._flows.items())
            if enabled.get(name) and entry.header.source.matches(connector, event)
        ]
