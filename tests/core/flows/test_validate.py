"""Flow validation: every problem code, at the exact line and column an editor would show.

Each test writes a small flow inline, so the expected position can be counted by eye;
prompts come from ``tests/fixtures/flows/prompts``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from connectors.base import ConnectorKind, FieldMeta
from core.flows.checks import output_refs
from core.flows.locations import SourceMap
from core.flows.prompts import PromptRegistry
from core.flows.validate import FlowCheck, Problem, validate_flow, validate_text

FIXTURES = Path(__file__).parents[2] / "fixtures" / "flows"
PROMPTS = PromptRegistry.load(FIXTURES / "prompts")

TICKET = [
    FieldMeta("subject", "string"),
    FieldMeta("body", "textarea"),
    FieldMeta("priority", "picklist", picklist_values=("Low", "high")),
    FieldMeta("status", "picklist", picklist_values=("low", "high")),
    FieldMeta("created_at", "datetime", updateable=False),
]
METADATA = {"ticket": TICKET}

# The valid flow the variants below start from (line 1 is `description:`).
VALID = """\
description: Set a ticket's priority.
source:
  connector: webhook
  object: ticket
  when_changed: [subject, body]
inputs:
  subject:
    field: subject
  body:
    field: body
task: classify
prompt: triage@1
output:
  fields:
    priority:
      type: string
      enum: [low, high]
    confidence:
      type: number
writeback:
  fields:
    status:
      from: output.priority
review:
  when: output.confidence < `0.5`
"""


def check(
    text: str,
    *,
    metadata: Mapping[str, Sequence[FieldMeta]] | None = None,
    target_metadata: Mapping[str, Sequence[FieldMeta]] | None = None,
    target_kind: ConnectorKind | None = None,
    allow_unreviewed_erp_writes: bool = False,
) -> FlowCheck:
    return validate_text(
        textwrap.dedent(text),
        "webhook/test",
        PROMPTS,
        metadata=metadata,
        target_metadata=target_metadata,
        target_kind=target_kind,
        allow_unreviewed_erp_writes=allow_unreviewed_erp_writes,
    )


def only(result: FlowCheck, code: str) -> Problem:
    found = [problem for problem in result.problems if problem.code == code]
    assert len(found) == 1, result.problems
    return found[0]


def at(problem: Problem) -> tuple[int, int]:
    return problem.line, problem.column


def test_the_valid_flow_has_no_problems() -> None:
    result = check(VALID, metadata=METADATA, target_kind=ConnectorKind.CRM)
    assert result.problems == []
    assert result.ok
    assert result.spec is not None
    assert result.spec.prompt == "triage@1"


def test_a_problem_prints_as_compilers_do() -> None:
    problem = Problem("f.yaml", 3, 5, "error", "unknown-key", "unknown key 'x'", "remove it")
    assert str(problem) == "f.yaml:3:5: error[unknown-key]: unknown key 'x' (hint: remove it)"
    assert str(Problem("f.yaml", 1, 1, "warning", "c", "m")) == "f.yaml:1:1: warning[c]: m"


# --- stage 1: YAML -----------------------------------------------------------------


def test_a_yaml_syntax_error_is_placed_at_the_parser_mark() -> None:
    result = check(
        """\
        source:
          connector: webhook
          object: [ticket
        task: classify
        """
    )
    problem = only(result, "yaml-syntax")
    assert at(problem) == (4, 5)
    assert result.spec is None
    assert result.document is None
    assert not result.ok


def test_a_tab_indentation_is_a_yaml_syntax_error() -> None:
    problem = only(check("source:\n\tconnector: webhook\n"), "yaml-syntax")
    assert at(problem) == (2, 1)


def test_a_key_written_twice_is_reported_at_the_second() -> None:
    result = check(VALID.replace("task: classify\n", "task: classify\ntask: extract\n"))
    problem = only(result, "duplicate-key")
    assert at(problem) == (12, 1)
    assert "first on line 11" in problem.message


# --- stage 2: shape (pydantic) -----------------------------------------------------


def test_an_unknown_key_points_at_the_key_with_a_did_you_mean() -> None:
    result = check(VALID.replace("  object: ticket", "  object: ticket\n  conector: x"))
    problem = only(result, "unknown-key")
    assert at(problem) == (5, 3)
    assert problem.message == "unknown key 'conector' in source"
    assert problem.hint == "did you mean 'connector'?"


def test_a_misspelt_required_key_is_one_problem_not_two() -> None:
    result = check(VALID.replace("prompt: triage@1", "promt: triage@1"))
    assert [p.code for p in result.problems] == ["unknown-key"]
    assert at(result.problems[0]) == (12, 1)
    assert result.problems[0].hint == "did you mean 'prompt'?"


def test_the_writeback_alias_from_is_located() -> None:
    result = check(VALID.replace("      from: output.priority", "      frm: output.priority"))
    assert [p.code for p in result.problems] == ["unknown-key"]
    assert at(result.problems[0]) == (23, 7)
    assert result.problems[0].message == "unknown key 'frm' in writeback.fields.status"
    assert result.problems[0].hint == "did you mean 'from'?"


def test_a_missing_nested_key_points_at_the_mapping_that_lacks_it() -> None:
    result = check(VALID.replace("      from: output.priority", "      transform: '@'"))
    problem = only(result, "missing-key")
    assert problem.message == "writeback.fields.status needs the key 'from'"
    assert at(problem) == (22, 5)  # `status:`, the key of the mapping without `from`
    assert problem.hint.startswith("add from: under writeback.fields.status (Where the value")


def test_a_missing_top_level_key_points_at_the_document() -> None:
    result = check(VALID.replace("task: classify\n", ""))
    problem = only(result, "missing-key")
    assert at(problem) == (1, 1)
    assert problem.hint == "add task: at the top level"


def test_a_wrong_type_points_at_the_value() -> None:
    result = check(VALID.replace("prompt: triage@1", "prompt: triage@1\nmax_tokens: many"))
    problem = only(result, "wrong-type")
    assert at(problem) == (13, 13)
    assert problem.message.startswith("max_tokens: Input should be a valid integer")


def test_a_scalar_where_a_mapping_belongs() -> None:
    text = "source: webhook\ninputs:" + VALID.split("inputs:", 1)[1]
    problem = only(check(text), "wrong-type")
    assert at(problem) == (1, 9)
    assert problem.message == "source must be a mapping (key: value lines), not the text 'webhook'"
    assert problem.hint.startswith("source takes the keys connector, object")


def test_a_block_value_of_the_wrong_type_points_at_its_key() -> None:
    text = VALID.replace("  when_changed: [subject, body]", "  when_changed:\n    a: b")
    problem = only(check(text), "wrong-type")
    assert at(problem) == (5, 3)
    assert problem.message == "source.when_changed: Input should be a valid list"


def test_a_value_of_neither_member_of_a_union_is_one_problem() -> None:
    problem = only(check(VALID.replace("[low, high]", "[low, 1.5]")), "wrong-type")
    assert at(problem) == (17, 19)
    assert problem.message == (
        "output.fields.priority.enum[1]: Input should be a valid string; or Input should be "
        "a valid integer, got a number with a fractional part"
    )


def test_a_wrong_type_in_a_list_is_explained_by_its_field() -> None:
    problem = only(check(VALID.replace("[subject, body]", "[subject, 3]")), "wrong-type")
    assert at(problem) == (5, 27)
    assert problem.message == "source.when_changed[1]: Input should be a valid string"
    assert problem.hint == (
        "when_changed: Updates match only when one of these fields changed (empty: any)"
    )


def test_a_bad_choice_in_a_list() -> None:
    text = VALID.replace("  when_changed: [subject, body]", "  change_types: [created, erased]")
    problem = only(check(text), "invalid-choice")
    assert at(problem) == (5, 27)
    assert problem.message.startswith("source.change_types[1]: Input should be 'created'")


def test_a_union_reports_only_the_member_that_was_meant() -> None:
    scalar = check(
        VALID.replace("  when: output.confidence < `0.5`", "  sometimes").replace(
            "review:\n  sometimes", "review: sometimes"
        )
    )
    problem = only(scalar, "invalid-choice")
    assert at(problem) == (24, 9)
    assert problem.message == "review: Input should be 'never' or 'always'"
    assert "never | always | {when: expression}" in problem.hint
    mapping = check(VALID.replace("  when: output.confidence < `0.5`", "  when: 'true'\n  if: x"))
    assert [p.code for p in mapping.problems] == ["unknown-key"]
    assert at(mapping.problems[0]) == (26, 3)
    assert mapping.problems[0].message == "unknown key 'if' in review"
    assert mapping.problems[0].hint == "allowed keys: when"


def test_a_bad_prompt_reference() -> None:
    problem = only(
        check(VALID.replace("prompt: triage@1", "prompt: triage-v1")), "invalid-prompt-ref"
    )
    assert at(problem) == (12, 9)
    assert "'triage-v1' is not name@version" in problem.message


def test_an_invalid_expression_is_placed_at_it() -> None:
    result = check(VALID.replace("from: output.priority", "from: output.[priority"))
    problem = only(result, "invalid-expression")
    assert at(problem) == (23, 13)
    assert problem.message.startswith("writeback.fields.status.from: invalid expression")


def test_a_constraint_on_an_output_field() -> None:
    text = VALID.replace("      type: number", "      type: number\n      max_length: 3")
    problem = only(check(text), "invalid-value")
    assert at(problem) == (18, 5)  # a model check: the output field's block, by its key
    assert "min_length and max_length apply to string outputs only" in problem.message


def test_an_input_name_must_be_a_valid_key() -> None:
    text = VALID.replace("  body:\n    field: body", "  1:\n    field: body")
    problem = only(check(text), "wrong-type")
    assert at(problem) == (9, 3)
    assert problem.message == "inputs.1: Input should be a valid string"


def test_a_file_that_is_not_a_mapping() -> None:
    problem = only(check("- one\n- two\n"), "wrong-type")
    assert at(problem) == (1, 1)
    assert problem.message == "a flow file must be a mapping (key: value lines), not a list"


# --- stage 3: meaning --------------------------------------------------------------


def test_prompt_missing_lists_the_versions_that_exist() -> None:
    problem = only(check(VALID.replace("triage@1", "triage@3")), "prompt-missing")
    assert at(problem) == (12, 9)
    assert problem.hint == "prompt triage has triage@1, triage@2"


def test_prompt_missing_suggests_a_near_name() -> None:
    problem = only(check(VALID.replace("triage@1", "triag@1")), "prompt-missing")
    assert problem.hint == "did you mean 'triage'?"


def test_a_slot_without_an_input() -> None:
    problem = only(check(VALID.replace("triage@1", "triage@2")), "prompt-slot-unfilled")
    assert at(problem) == (12, 9)
    assert problem.severity == "error"
    assert "{{ plan }}" in problem.message
    assert "add inputs.plan" in problem.hint


def test_an_input_no_slot_uses_is_a_warning() -> None:
    text = VALID.replace("inputs:\n", "inputs:\n  email:\n    field: email\n")
    result = check(text)
    problem = only(result, "input-unused")
    assert at(problem) == (7, 3)
    assert problem.severity == "warning"
    assert result.ok  # warnings never make a flow invalid


def test_an_output_never_used() -> None:
    text = VALID.replace("  when: output.confidence < `0.5`", "  when: record.vip")
    problem = only(check(text), "output-never-used")
    assert at(problem) == (18, 5)
    assert "review.when" in problem.hint


def test_output_used_only_by_a_transform_is_not_used() -> None:
    # A transform sees the value (@), not the output: `output.x` there reads nothing.
    text = VALID.replace(
        "      from: output.priority",
        "      from: record.subject\n      transform: output.priority",
    )
    assert only(check(text), "output-never-used").message.startswith("output field 'priority'")


def test_without_a_writeback_every_output_is_used() -> None:
    text = VALID.split("writeback:")[0]
    assert check(text).problems == []


def test_a_writeback_reading_an_unknown_output() -> None:
    result = check(VALID.replace("from: output.priority", "from: output.priorty"))
    problem = only(result, "writeback-output-unknown")
    assert at(problem) == (23, 13)
    assert problem.hint == "did you mean 'priority'?"


def test_review_when_reading_an_unknown_output() -> None:
    problem = only(
        check(VALID.replace("output.confidence", "output.certainty")), "writeback-output-unknown"
    )
    assert at(problem) == (25, 9)


def test_a_source_field_not_on_the_object() -> None:
    text = VALID.replace("    field: body", "    field: bdy.text")
    problem = only(check(text, metadata=METADATA), "field-unknown")
    assert at(problem) == (10, 12)
    assert problem.message == "ticket has no field 'bdy'"
    assert problem.hint == "did you mean 'body'?"


def test_a_when_changed_field_not_on_the_object() -> None:
    text = VALID.replace("[subject, body]", "[subject, body, title]")
    result = check(text, metadata=METADATA)
    problem = only(result, "field-unknown")
    assert at(problem) == (5, 33)
    assert "'title'" in problem.message


def test_field_checks_need_metadata() -> None:
    text = VALID.replace("    field: body", "    field: bdy")
    assert check(text).problems == []
    assert check(text, metadata={"other": TICKET}).problems == []


def test_a_writeback_field_not_on_the_target() -> None:
    text = VALID.replace("    status:\n", "    stauts:\n")
    problem = only(check(text, metadata=METADATA), "writeback-field-unknown")
    assert at(problem) == (22, 5)
    assert problem.hint == "did you mean 'status'?"


def test_target_metadata_describes_another_connection() -> None:
    text = VALID.replace("writeback:\n", "writeback:\n  connection: erp\n  object: order\n")
    result = check(text, metadata=METADATA, target_metadata={"order": TICKET[:2]})
    problem = only(result, "writeback-field-unknown")
    assert at(problem) == (24, 5)
    # Another connection without target metadata: nothing to check the fields against.
    assert check(text, metadata=METADATA).problems == []


def test_a_read_only_writeback_field() -> None:
    text = VALID.replace("    status:\n", "    created_at:\n")
    problem = only(check(text, target_metadata=METADATA), "writeback-read-only")
    assert at(problem) == (22, 5)


def test_an_enum_the_picklist_does_not_accept() -> None:
    text = VALID.replace("    status:\n", "    priority:\n")
    problem = only(check(text, metadata=METADATA), "enum-mismatch")
    assert at(problem) == (23, 13)
    assert problem.message == "output.priority may be 'low', which ticket.priority does not accept"
    assert problem.hint.startswith("ticket.priority accepts Low, high")


def test_an_enum_mapped_by_a_transform_is_not_compared() -> None:
    text = VALID.replace("    status:\n", "    priority:\n").replace(
        "      from: output.priority",
        '      from: output.priority\n      transform: \'lookup(@, `{"low": "Low"}`, @)\'',
    )
    assert check(text, metadata=METADATA).problems == []


def test_an_erp_write_needs_review() -> None:
    text = VALID.replace("  when: output.confidence < `0.5`", "  when: output.confidence < `0`")
    text = text.split("review:")[0] + "review: never\n"
    text = text.replace("    confidence:\n      type: number\n", "")
    problem = only(check(text, target_kind=ConnectorKind.ERP), "review-required")
    assert at(problem) == (22, 9)
    assert "allow_unreviewed_writes" in problem.hint
    assert check(text, target_kind=ConnectorKind.CRM).problems == []
    allowed = check(text, target_kind=ConnectorKind.ERP, allow_unreviewed_erp_writes=True)
    assert allowed.problems == []


def test_semantic_errors_keep_the_spec() -> None:
    result = check(VALID.replace("triage@1", "triage@9"))
    assert result.spec is not None
    assert not result.ok


def test_validate_flow_names_the_flow_and_its_file() -> None:
    result = validate_flow(FIXTURES / "webhook" / "triage.yaml", PROMPTS)
    assert result.name == "webhook/triage"
    assert result.ok
    broken = validate_flow(FIXTURES / "webhook" / "typo.yaml", PROMPTS)
    assert [str(p) for p in broken.problems] == [
        f"{FIXTURES / 'webhook' / 'typo.yaml'}:9:1: error[unknown-key]: unknown key 'promt' "
        "(hint: did you mean 'prompt'?)"
    ]


def test_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "webhook" / "binary.yaml"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe\x00")
    result = validate_flow(path, PROMPTS)
    assert [(p.code, p.line, p.column) for p in result.problems] == [("unreadable", 1, 1)]
    assert result.name == "webhook/binary"


# --- the pieces --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "names", "whole"),
    [
        ("output.rating", {"rating"}, False),
        ("output.a.b", {"a"}, False),
        ("coalesce(output.a, record.b)", {"a"}, False),
        ("output.tags[0]", {"tags"}, False),
        ("@.output.x", {"x"}, False),
        ("record.output.x", set(), False),
        ("items[?x == output.y]", set(), False),  # inside a filter, `output` is an item's
        ("sort_by(record.l, &output.z)", set(), False),
        ("'output.x'", set(), False),
        ("output", set(), True),
        ("output.*", set(), True),
        ("keys(@)", set(), True),
        ("output.a == `1` && patch.x", {"a"}, False),
    ],
)
def test_output_references_come_from_the_syntax_tree(
    expression: str, names: set[str], whole: bool
) -> None:
    refs = output_refs(expression)
    assert refs.names == names
    assert refs.whole is whole


def test_locations_fall_back_to_the_nearest_ancestor() -> None:
    source = SourceMap.parse("a:\n  b:\n    c: 1\n  d: [x, y]\n")
    assert source.locate(("a", "b", "c")) == (3, 8)
    assert source.locate(("a", "b", "c"), at_key=True) == (3, 5)
    assert source.locate(("a", "b", "missing")) == (2, 3)
    assert source.locate(("a", "d", 1)) == (4, 10)
    assert source.locate(("a", "d", 5)) == (4, 3)
    assert source.locate(("nothing",)) == (1, 1)
    assert SourceMap.parse("").locate(("a",)) == (1, 1)
