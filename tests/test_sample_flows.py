"""The sample flows under mappings/ are valid, consistent with their prompts, and loadable.

Each check is one a person editing a flow is likely to break: the file no longer validates,
the prompt it names is missing, a prompt slot has no input (or an input is sent but never
placed in the prompt), an output is asked for but never used, or a writeback field retriggers
the flow that wrote it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.flows import expressions
from core.flows.catalog import FlowCatalog
from core.flows.prompts import PromptRegistry
from core.flows.spec import FlowSpec, OutputField, OutputType, ReviewMode, ReviewWhen

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
PROMPTS = MAPPINGS / "prompts"
PLATFORMS = ("salesforce", "hubspot", "dynamics", "sap")
ERP_PLATFORMS = ("dynamics", "sap")
FLOW_FILES = sorted(path for path in MAPPINGS.glob("*/*.yaml") if path.parent != PROMPTS)


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _load(path: Path) -> FlowSpec:
    raw: Any = yaml.safe_load(path.read_text())
    return FlowSpec.model_validate(raw)


def _expressions(flow: FlowSpec) -> list[str]:
    """Every expression that can read ``output``: writeback sources, transforms, review."""
    found: list[str] = []
    if flow.writeback is not None:
        if flow.writeback.record_id is not None:
            found.append(flow.writeback.record_id)
        for field in flow.writeback.fields.values():
            found.append(field.from_)
            if field.transform is not None:
                found.append(field.transform)
    if isinstance(flow.review, ReviewWhen):
        found.append(flow.review.when)
    return found


SAMPLES: dict[OutputType, Any] = {
    OutputType.STRING: "text",
    OutputType.INTEGER: 7,
    OutputType.NUMBER: 0.5,
    OutputType.BOOLEAN: True,
}


def _sample(field: OutputField) -> Any:
    """A value of the field's type, as the gateway would accept it from Claude."""
    if field.enum is not None:
        return field.enum[0]
    if field.type is OutputType.ARRAY:
        assert field.items is not None
        return [SAMPLES[field.items]]
    return SAMPLES[field.type]


@pytest.fixture(scope="module")
def prompts() -> PromptRegistry:
    return PromptRegistry.load(PROMPTS)


flow_files = pytest.mark.parametrize("path", FLOW_FILES, ids=_name)


def test_sample_flows_exist() -> None:
    assert FLOW_FILES


@flow_files
def test_flow_validates(path: Path) -> None:
    flow = _load(path)
    assert flow.description
    assert flow.source.connector == path.parent.name


@flow_files
def test_prompt_exists_and_its_slots_are_the_inputs(path: Path, prompts: PromptRegistry) -> None:
    flow = _load(path)
    prompt = prompts.get(flow.prompt)
    assert prompt is not None, f"{flow.prompt} is not under {PROMPTS}"
    assert prompt.slots == set(flow.inputs)


@flow_files
def test_every_output_is_written_back_or_reviewed(path: Path) -> None:
    flow = _load(path)
    used = " ".join(_expressions(flow))
    unused = [name for name in flow.output.fields if not re.search(rf"\boutput\.{name}\b", used)]
    assert unused == []


@flow_files
def test_expressions_evaluate_over_an_answer(path: Path) -> None:
    flow = _load(path)
    output = {name: _sample(field) for name, field in flow.output.fields.items()}
    data = {"output": output, "record": {}}
    # evaluate raises ExpressionError when a function is given a value of the wrong type
    if isinstance(flow.review, ReviewWhen):
        expressions.evaluate(flow.review.when, data | {"patch": {}})
    if flow.writeback is not None:
        if flow.writeback.record_id is not None:
            expressions.evaluate(flow.writeback.record_id, data)
        for field in flow.writeback.fields.values():
            value = expressions.evaluate(field.from_, data)
            if field.transform is not None:
                expressions.evaluate(field.transform, value)


@flow_files
def test_writeback_does_not_retrigger_its_flow(path: Path) -> None:
    flow = _load(path)
    if flow.writeback is None or flow.writeback.object not in (None, flow.source.object):
        return
    source = flow.source
    assert source.change_types == ["created"] or source.when_changed, (
        "an update-triggered flow writing to its own object needs when_changed"
    )
    assert not set(source.when_changed) & set(flow.writeback.fields)


@pytest.mark.parametrize("path", [p for p in FLOW_FILES if p.parent.name in ERP_PLATFORMS])
def test_erp_flows_never_skip_review(path: Path) -> None:
    assert _load(path).review is not ReviewMode.NEVER


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_platform_has_two_flows(platform: str) -> None:
    assert len([p for p in FLOW_FILES if p.parent.name == platform]) >= 2


def test_every_prompt_is_used_by_a_flow(prompts: PromptRegistry) -> None:
    used = {_load(path).prompt for path in FLOW_FILES}
    assert set(prompts.refs()) == used


def test_the_server_catalog_loads_every_flow() -> None:
    catalog = FlowCatalog.load(MAPPINGS)
    assert catalog.names() == sorted(_name(path) for path in FLOW_FILES)
