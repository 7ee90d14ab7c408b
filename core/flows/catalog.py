"""The flow catalog: which flows exist, whether each is valid, and which events each matches.

A flow lives in ``mappings/<platform>/<flow>.yaml`` and is named ``<platform>/<flow>``; its
prompts live under ``mappings/prompts/``. Every file goes through
:func:`core.flows.validate.validate_flow` at load.

A broken flow does not stop the start: one typo would otherwise take every other flow (and
the webhooks feeding them) down with it. It stays listed, with its problems, so the API and
``switchyard flows list`` can show what to fix, but it is never matched: an invalid flow
never gets a job. Its ``source`` is still read when it alone is valid, so the flow shows up
under its connector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from connectors.base import ChangeEvent
from core.flows.prompts import PromptRegistry
from core.flows.spec import FlowSource, FlowSpec
from core.flows.validate import FlowCheck, Problem, validate_flow
from core.logging import get_logger

__all__ = ["FlowCatalog", "FlowEntry", "FlowHeader", "FlowSource", "flow_files", "load_entries"]

PROMPTS_DIR = "prompts"

log = get_logger("switchyard.flows")


class FlowHeader(BaseModel):
    """The part of a flow file that routes events; readable even when the rest is not."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    description: str = ""
    source: FlowSource


@dataclass(frozen=True)
class FlowEntry:
    """One flow file as loaded: ``spec`` when it has the right shape, and its problems.

    ``header`` is None when not even the ``source`` section can be read; such an entry
    belongs to no connector and matches nothing.
    """

    name: str
    path: str
    header: FlowHeader | None
    spec: FlowSpec | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(problem.severity == "error" for problem in self.problems)

    @property
    def source(self) -> FlowSource | None:
        if self.header is not None:
            return self.header.source
        return self.spec.source if self.spec is not None else None

    @classmethod
    def from_check(cls, check: FlowCheck) -> FlowEntry:
        if check.spec is not None:
            header: FlowHeader | None = FlowHeader(
                description=check.spec.description, source=check.spec.source
            )
        else:
            header = _header(check.document)
        return cls(check.name, str(check.path), header, check.spec, list(check.problems))


def _header(document: Any) -> FlowHeader | None:
    try:
        return FlowHeader.model_validate(document)
    except ValidationError:
        return None


def flow_files(root: Path) -> list[Path]:
    """``root/<platform>/*.yaml`` in name order, without the prompts directory."""
    return sorted(path for path in root.glob("*/*.yaml") if path.parent.name != PROMPTS_DIR)


def load_entries(root: Path, prompts: PromptRegistry) -> list[FlowEntry]:
    """Every flow under ``root``, validated against ``prompts``, quietly (for tools)."""
    return [FlowEntry.from_check(validate_flow(path, prompts)) for path in flow_files(root)]


class FlowCatalog:
    def __init__(
        self, entries: Iterable[FlowEntry] = (), prompts: PromptRegistry | None = None
    ) -> None:
        self._flows: dict[str, FlowEntry] = {entry.name: entry for entry in entries}
        self.prompts = prompts if prompts is not None else PromptRegistry()

    @classmethod
    def load(cls, root: Path, prompts: PromptRegistry | None = None) -> FlowCatalog:
        """Validate every flow under ``root``; prompts default to ``root/prompts``.

        A malformed prompt file still stops the start (``SettingsError``): a prompt is
        shared by flows, and which flows it breaks cannot be known from the file alone.
        """
        registry = prompts if prompts is not None else PromptRegistry.load(root / PROMPTS_DIR)
        entries = load_entries(root, registry)
        for entry in entries:
            if not entry.ok:
                errors = [str(problem) for problem in entry.problems if problem.severity == "error"]
                log.warning("flow_invalid", flow=entry.name, errors=errors)
        return cls(entries, registry)

    def __contains__(self, name: object) -> bool:
        return name in self._flows

    def get(self, name: str) -> FlowEntry | None:
        return self._flows.get(name)

    def names(self) -> list[str]:
        return sorted(self._flows)

    def entries(self) -> list[FlowEntry]:
        """Every entry, valid or not, in name order."""
        return [self._flows[name] for name in self.names()]

    def for_connector(self, connector: str) -> list[str]:
        """Names of the flows whose source is ``connector`` (valid or not), in name order."""
        return [
            entry.name
            for entry in self.entries()
            if entry.source is not None and entry.source.connector == connector
        ]

    def matching(
        self, connector: str, event: ChangeEvent, enabled: Mapping[str, bool]
    ) -> list[str]:
        """Enabled, valid flows whose source matches ``event``, in name order."""
        return [
            entry.name
            for entry in self.entries()
            if enabled.get(entry.name)
            and entry.ok
            and entry.source is not None
            and entry.source.matches(connector, event)
        ]
