"""The catalog loads every flow through the validator: broken flows are listed, never run."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import ChangeEvent, ChangeType
from core.errors import SettingsError
from core.flows.catalog import FlowCatalog, FlowEntry, FlowHeader, FlowSource
from core.flows.prompts import PromptRegistry

FIXTURES = Path(__file__).parents[2] / "fixtures" / "flows"
ALL = {"webhook/no_prompt": True, "webhook/summary": True, "webhook/triage": True}


def created(object_name: str = "ticket") -> ChangeEvent:
    return ChangeEvent(
        platform_event_id="e1", object=object_name, record_id="1", change_type=ChangeType.CREATED
    )


@pytest.fixture(scope="module")
def catalog() -> FlowCatalog:
    return FlowCatalog.load(FIXTURES)


def test_every_flow_is_listed_valid_or_not(catalog: FlowCatalog) -> None:
    assert catalog.names() == [
        "crm/no_source",
        "webhook/no_prompt",
        "webhook/summary",
        "webhook/triage",
        "webhook/typo",
    ]
    assert "webhook/typo" in catalog
    assert "prompts/triage" not in catalog
    assert catalog.prompts.refs() == ["summary@1", "triage@1", "triage@2"]


def test_an_invalid_flow_keeps_its_problems(catalog: FlowCatalog) -> None:
    typo = catalog.get("webhook/typo")
    assert typo is not None
    assert not typo.ok
    assert typo.spec is None
    assert [(p.code, p.line, p.column) for p in typo.problems] == [("unknown-key", 9, 1)]
    assert typo.header is not None  # its source alone is readable
    assert typo.header.source.connector == "webhook"


def test_semantic_errors_keep_the_spec(catalog: FlowCatalog) -> None:
    entry = catalog.get("webhook/no_prompt")
    assert entry is not None
    assert entry.spec is not None
    assert [p.code for p in entry.problems] == ["prompt-missing"]
    assert not entry.ok


def test_warnings_do_not_make_a_flow_invalid(catalog: FlowCatalog) -> None:
    entry = catalog.get("webhook/summary")
    assert entry is not None
    assert entry.ok
    assert [p.severity for p in entry.problems] == ["warning"]


def test_a_flow_without_a_readable_source_has_no_header(catalog: FlowCatalog) -> None:
    entry = catalog.get("crm/no_source")
    assert entry is not None
    assert entry.header is None
    assert entry.source is None
    assert "crm/no_source" not in catalog.for_connector("webhook")


def test_an_invalid_flow_is_never_matched(catalog: FlowCatalog) -> None:
    enabled = dict.fromkeys(catalog.names(), True)
    assert catalog.matching("webhook", created(), enabled) == ["webhook/summary", "webhook/triage"]
    assert catalog.matching("webhook", created(), ALL | {"webhook/triage": False}) == [
        "webhook/summary"
    ]
    assert catalog.matching("webhook", created("contact"), enabled) == []


def test_invalid_flows_still_show_under_their_connector(catalog: FlowCatalog) -> None:
    assert catalog.for_connector("webhook") == [
        "webhook/no_prompt",
        "webhook/summary",
        "webhook/triage",
        "webhook/typo",
    ]
    assert catalog.for_connector("crm") == []


def test_the_header_routes_updates_by_changed_field(catalog: FlowCatalog) -> None:
    entry = catalog.get("webhook/triage")
    assert entry is not None
    assert entry.header is not None
    update = ChangeEvent(
        platform_event_id="e2",
        object="ticket",
        record_id="1",
        change_type=ChangeType.UPDATED,
        changed_fields=("status",),
    )
    assert not entry.header.source.matches("webhook", update)
    changed_body = update.model_copy(update={"changed_fields": ("body",)})
    assert entry.header.source.matches("webhook", changed_body)


def test_prompts_can_be_given() -> None:
    catalog = FlowCatalog.load(FIXTURES, PromptRegistry())
    triage = catalog.get("webhook/triage")
    assert triage is not None
    assert [p.code for p in triage.problems] == ["prompt-missing"]
    assert catalog.matching("webhook", created(), ALL) == []


def test_the_prompts_directory_holds_no_flows(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "stray.yaml").write_text("source: {connector: x, object: y}\n")
    assert FlowCatalog.load(tmp_path).names() == []


def test_a_malformed_prompt_still_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "prompts" / "triage").mkdir(parents=True)
    (tmp_path / "prompts" / "triage" / "1.yaml").write_text("system: [\n")
    with pytest.raises(SettingsError, match=r"triage/1\.yaml is invalid"):
        FlowCatalog.load(tmp_path)


def test_entries_built_by_hand_need_only_a_header() -> None:
    entry = FlowEntry(
        name="fake/note",
        path="",
        header=FlowHeader(source=FlowSource(connector="fake", object="note")),
    )
    catalog = FlowCatalog([entry])
    assert entry.ok
    assert catalog.matching("fake", created("note"), {"fake/note": True}) == ["fake/note"]
    assert catalog.prompts.refs() == []
