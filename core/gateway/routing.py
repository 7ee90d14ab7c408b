"""Routing: from a task kind to a model tier to a model id, and the default output cap.

A request either names a model (honoured as is, after checking the catalogue) or asks for
``"auto"`` (or no model) together with a task kind; the :class:`RoutingTable` maps the task to
a tier and the tier to a model. Tiers are ordered, so a routed request can be escalated to the
next, larger tier (:func:`escalate`). An explicitly chosen model is never escalated.

The table is built from plain mappings (:meth:`RoutingTable.build`) so settings can feed it;
every value not given keeps its default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from core.errors import SettingsError, TerminalError
from core.gateway.catalog import Catalog

AUTO = "auto"


class TaskKind(StrEnum):
    CLASSIFY = "classify"
    EXTRACT = "extract"
    SUMMARIZE = "summarize"
    REASON = "reason"
    WRITE = "write"
    HARD = "hard"


class UnknownTask(TerminalError):
    problem_type = "unknown-task"
    title = "Unknown task kind"
    status = 400


class RouteRequired(UnknownTask):
    """``model`` is ``"auto"`` or absent and no task kind says what to route on."""

    title = "A task kind is required to route a request without a model"


DEFAULT_TASK_TIERS: Mapping[str, str] = MappingProxyType(
    {
        TaskKind.CLASSIFY: "small",
        TaskKind.EXTRACT: "small",
        TaskKind.SUMMARIZE: "small",
        TaskKind.REASON: "medium",
        TaskKind.WRITE: "medium",
        TaskKind.HARD: "large",
    }
)
DEFAULT_TIER_MODELS: Mapping[str, str] = MappingProxyType(
    {"small": "claude-haiku-5-5", "medium": "claude-sonnet-5-5", "large": "claude-opus-5-5"}
)
DEFAULT_TIER_ORDER: tuple[str, ...] = ("small", "medium", "large")
DEFAULT_MAX_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        TaskKind.CLASSIFY: 256,
        TaskKind.EXTRACT: 1024,
        TaskKind.SUMMARIZE: 1024,
        TaskKind.REASON: 2048,
        TaskKind.WRITE: 2048,
        TaskKind.HARD: 4096,
    }
)
# Output cap when neither the request nor a task kind gives one (explicit model, no task).
DEFAULT_FALLBACK_MAX_TOKENS = 1024


@dataclass(frozen=True)
class Route:
    model: str
    tier: str | None
    task: str | None
    explicit: bool


@dataclass(frozen=True)
class RoutingTable:
    """Task → tier, tier → model, the escalation order and default output caps."""

    task_tiers: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TASK_TIERS)
    tier_models: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TIER_MODELS)
    tier_order: tuple[str, ...] = DEFAULT_TIER_ORDER
    max_tokens: Mapping[str, int] = field(default_factory=lambda: DEFAULT_MAX_TOKENS)
    fallback_max_tokens: int = DEFAULT_FALLBACK_MAX_TOKENS

    def __post_init__(self) -> None:
        for task, tier in self.task_tiers.items():
            if tier not in self.tier_models:
                raise SettingsError(f"task {task!r} routes to tier {tier!r}, which has no model")
        for tier in self.tier_order:
            if tier not in self.tier_models:
                raise SettingsError(f"tier order names {tier!r}, which has no model")
        if len(set(self.tier_order)) != len(self.tier_order):
            raise SettingsError("tier order lists a tier twice")
        for task, cap in {**self.max_tokens, "(fallback)": self.fallback_max_tokens}.items():
            if cap < 1:
                raise SettingsError(f"max_tokens for {task!r} must be positive, not {cap}")

    @classmethod
    def build(
        cls,
        *,
        task_tiers: Mapping[str, str] | None = None,
        tier_models: Mapping[str, str] | None = None,
        tier_order: Sequence[str] | None = None,
        max_tokens: Mapping[str, int] | None = None,
        fallback_max_tokens: int | None = None,
    ) -> RoutingTable:
        """A table from plain mappings; each given entry overrides (or adds to) the default."""
        return cls(
            task_tiers=MappingProxyType({**DEFAULT_TASK_TIERS, **(task_tiers or {})}),
            tier_models=MappingProxyType({**DEFAULT_TIER_MODELS, **(tier_models or {})}),
            tier_order=tuple(tier_order) if tier_order is not None else DEFAULT_TIER_ORDER,
            max_tokens=MappingProxyType({**DEFAULT_MAX_TOKENS, **(max_tokens or {})}),
            fallback_max_tokens=(
                DEFAULT_FALLBACK_MAX_TOKENS if fallback_max_tokens is None else fallback_max_tokens
            ),
        )

    def check(self, catalog: Catalog) -> None:
        """Fail at start, not on the first request, when a tier names an unknown model."""
        for tier, model in self.tier_models.items():
            if catalog.find(model) is None:
                raise SettingsError(f"tier {tier!r} names model {model!r}, not in the catalogue")

    def tier_of(self, task: str) -> str:
        try:
            return self.task_tiers[task]
        except KeyError:
            known = ", ".join(sorted(self.task_tiers))
            raise UnknownTask(f"task {task!r} is not one of: {known}", task=task) from None

    def route(self, model: str | None, task: str | None, *, catalog: Catalog) -> Route:
        task_name = str(task) if task is not None else None
        if task_name is not None:
            self.tier_of(task_name)  # an unknown task is an error even with an explicit model
        if model is not None and model != AUTO:
            catalog.get(model)
            return Route(model=model, tier=None, task=task_name, explicit=True)
        if task_name is None:
            raise RouteRequired(f"model {AUTO!r} (or no model) needs a task kind to route on")
        tier = self.tier_of(task_name)
        chosen = self.tier_models[tier]
        catalog.get(chosen)
        return Route(model=chosen, tier=tier, task=task_name, explicit=False)

    def escalate(self, route: Route) -> Route | None:
        """The same task on the next tier up; ``None`` at the top or for an explicit model."""
        if route.explicit or route.tier is None or route.tier not in self.tier_order:
            return None
        position = self.tier_order.index(route.tier)
        if position + 1 >= len(self.tier_order):
            return None
        tier = self.tier_order[position + 1]
        return Route(model=self.tier_models[tier], tier=tier, task=route.task, explicit=False)

    def cap_max_tokens(self, requested: int | None, task: str | None) -> int:
        """The request's (or flow's) ``max_tokens`` when given, else the task's default."""
        if requested is not None:
            return requested
        if task is None:
            return self.fallback_max_tokens
        self.tier_of(str(task))
        return self.max_tokens.get(str(task), self.fallback_max_tokens)


def route(
    model: str | None,
    task: str | None,
    *,
    catalog: Catalog,
    table: RoutingTable | None = None,
) -> Route:
    """Resolve a request's ``model``/task pair; see :meth:`RoutingTable.route`."""
    return (table or RoutingTable()).route(model, task, catalog=catalog)


def escalate(route: Route, *, table: RoutingTable | None = None) -> Route | None:
    return (table or RoutingTable()).escalate(route)


def cap_max_tokens(
    requested: int | None, task: str | None, *, table: RoutingTable | None = None
) -> int:
    return (table or RoutingTable()).cap_max_tokens(requested, task)
