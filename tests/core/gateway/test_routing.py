"""Routing: task kind → tier → model, escalation, and output caps."""

from __future__ import annotations

import pytest

from core.errors import SettingsError, SwitchyardError
from core.gateway.catalog import Catalog, UnknownModel
from core.gateway.routing import (
    Route,
    RouteRequired,
    RoutingTable,
    TaskKind,
    UnknownTask,
    cap_max_tokens,
    escalate,
    route,
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.mark.parametrize(
    ("task", "tier", "model"),
    [
        ("classify", "small", "claude-haiku-5-5"),
        ("extract", "small", "claude-haiku-5-5"),
        ("summarize", "small", "claude-haiku-5-5"),
        ("reason", "medium", "claude-sonnet-5-5"),
        ("write", "medium", "claude-sonnet-5-5"),
        ("hard", "large", "claude-opus-5-5"),
    ],
)
def test_auto_routes_each_task_to_its_tier(
    catalog: Catalog, task: str, tier: str, model: str
) -> None:
    assert route("auto", task, catalog=catalog) == Route(model, tier, task, explicit=False)
    assert route(None, task, catalog=catalog) == Route(model, tier, task, explicit=False)


def test_task_kind_members_are_accepted_as_strings(catalog: Catalog) -> None:
    assert route(None, TaskKind.HARD, catalog=catalog).model == "claude-opus-5-5"
    assert {kind.value for kind in TaskKind} == set(RoutingTable().task_tiers)


def test_an_explicit_model_is_honoured_and_still_records_the_task(catalog: Catalog) -> None:
    chosen = route("claude-fable-5-2", "classify", catalog=catalog)
    assert chosen == Route("claude-fable-5-2", None, "classify", explicit=True)
    assert route("claude-opus-4-8", None, catalog=catalog).task is None


def test_an_explicit_model_must_be_in_the_catalogue(catalog: Catalog) -> None:
    with pytest.raises(UnknownModel):
        route("claude-imaginary-9", "classify", catalog=catalog)


@pytest.mark.parametrize("model", ["auto", None])
def test_auto_without_a_task_needs_one(catalog: Catalog, model: str | None) -> None:
    with pytest.raises(RouteRequired) as caught:
        route(model, None, catalog=catalog)
    assert isinstance(caught.value, UnknownTask)
    assert isinstance(caught.value, SwitchyardError)
    assert caught.value.status == 400
    assert caught.value.problem_type == "unknown-task"


@pytest.mark.parametrize("model", ["auto", None, "claude-sonnet-5-5"])
def test_an_unknown_task_is_refused(catalog: Catalog, model: str | None) -> None:
    with pytest.raises(UnknownTask) as caught:
        route(model, "translate", catalog=catalog)
    assert caught.value.status == 400
    assert caught.value.problem_type == "unknown-task"
    assert caught.value.extensions == {"task": "translate"}


def test_escalation_climbs_the_tiers_then_stops(catalog: Catalog) -> None:
    small = route("auto", "extract", catalog=catalog)
    medium = escalate(small)
    assert medium == Route("claude-sonnet-5-5", "medium", "extract", explicit=False)
    assert medium is not None
    large = escalate(medium)
    assert large == Route("claude-opus-5-5", "large", "extract", explicit=False)
    assert large is not None
    assert escalate(large) is None


def test_an_explicit_model_is_never_escalated(catalog: Catalog) -> None:
    assert escalate(route("claude-haiku-5-5", "extract", catalog=catalog)) is None


@pytest.mark.parametrize(
    ("task", "cap"),
    [
        ("classify", 256),
        ("extract", 1024),
        ("summarize", 1024),
        ("reason", 2048),
        ("write", 2048),
        ("hard", 4096),
    ],
)
def test_max_tokens_defaults_per_task(task: str, cap: int) -> None:
    assert cap_max_tokens(None, task) == cap


def test_a_requested_max_tokens_wins_over_the_default() -> None:
    assert cap_max_tokens(8000, "classify") == 8000
    assert cap_max_tokens(10, "hard") == 10
    assert cap_max_tokens(None, None) == 1024  # explicit model, no task: the fallback


def test_the_table_is_built_from_plain_mappings(catalog: Catalog) -> None:
    table = RoutingTable.build(
        task_tiers={"classify": "medium", "triage": "small"},
        tier_models={"small": "claude-haiku-4-5-20251001", "xl": "claude-fable-5-2"},
        tier_order=["small", "medium", "large", "xl"],
        max_tokens={"classify": 64, "triage": 128},
        fallback_max_tokens=2000,
    )
    assert table.route("auto", "classify", catalog=catalog).model == "claude-sonnet-5-5"
    triage = table.route(None, "triage", catalog=catalog)
    assert triage == Route("claude-haiku-4-5-20251001", "small", "triage", explicit=False)
    hard = table.route(None, "hard", catalog=catalog)
    assert table.escalate(hard) == Route("claude-fable-5-2", "xl", "hard", explicit=False)
    assert table.cap_max_tokens(None, "classify") == 64
    assert table.cap_max_tokens(None, "summarize") == 1024  # untouched default
    assert table.cap_max_tokens(None, None) == 2000
    table.check(catalog)
    # The defaults are not affected by a built table.
    assert RoutingTable().task_tiers["classify"] == "small"


def test_a_table_with_a_tier_without_model_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="'huge'"):
        RoutingTable.build(task_tiers={"hard": "huge"})
    with pytest.raises(SettingsError, match="'huge'"):
        RoutingTable.build(tier_order=["small", "huge"])
    with pytest.raises(SettingsError, match="positive"):
        RoutingTable.build(max_tokens={"classify": 0})


def test_check_names_a_tier_model_missing_from_the_catalogue(catalog: Catalog) -> None:
    table = RoutingTable.build(tier_models={"large": "claude-opus-9"})
    with pytest.raises(SettingsError, match="claude-opus-9"):
        table.check(catalog)
    with pytest.raises(UnknownModel):
        table.route("auto", "hard", catalog=catalog)
