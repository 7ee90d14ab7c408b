"""``switchyard flows``: validate's output and exit codes, list, and the schema file's guard."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from core.cli import app
from core.flows.cli import flow_schema_text

FIXTURES = Path(__file__).parents[2] / "fixtures" / "flows"
REPO_SCHEMA = Path(__file__).parents[3] / "mappings" / "schema.json"

runner = CliRunner()


def test_validate_prints_every_problem_and_fails_on_errors() -> None:
    result = runner.invoke(app, ["flows", "validate", str(FIXTURES)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    typo = FIXTURES / "webhook" / "typo.yaml"
    at = lines.index(f"{typo}:9:1: error[unknown-key]: unknown key 'promt'")
    assert lines[at + 1] == "    hint: did you mean 'prompt'?"
    summary = FIXTURES / "webhook" / "summary.yaml"
    assert any(line.startswith(f"{summary}:8:3: warning[input-unused]: ") for line in lines)
    assert lines[-1] == "5 flow(s) checked, 3 invalid: 6 error(s), 1 warning(s)"


def test_warnings_do_not_fail_a_run() -> None:
    result = runner.invoke(app, ["flows", "validate", str(FIXTURES / "webhook" / "summary.yaml")])
    assert result.exit_code == 0
    assert "warning[input-unused]" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "1 flow(s) checked, 0 invalid: 0 error(s), 1 warning(s)"
    )


def test_a_valid_file_passes() -> None:
    result = runner.invoke(app, ["flows", "validate", str(FIXTURES / "webhook" / "triage.yaml")])
    assert result.exit_code == 0
    assert result.stdout == "1 flow(s) checked, 0 invalid: 0 error(s), 0 warning(s)\n"


def test_a_platform_directory_reads_prompts_from_its_root() -> None:
    result = runner.invoke(app, ["flows", "validate", str(FIXTURES / "crm")])
    assert result.exit_code == 1
    assert "1 flow(s) checked, 1 invalid" in result.stdout


def test_validate_as_json() -> None:
    result = runner.invoke(app, ["flows", "validate", "--format", "json", str(FIXTURES)])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    typo = next(p for p in problems if p["code"] == "unknown-key")
    assert typo == {
        "file": str(FIXTURES / "webhook" / "typo.yaml"),
        "line": 9,
        "column": 1,
        "severity": "error",
        "code": "unknown-key",
        "message": "unknown key 'promt'",
        "hint": "did you mean 'prompt'?",
    }
    assert sorted({p["code"] for p in problems}) == [
        "input-unused",
        "missing-key",
        "prompt-missing",
        "unknown-key",
        "wrong-type",
    ]


def test_validate_defaults_to_the_settings_mappings_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_MAPPINGS_DIR", str(FIXTURES))
    result = runner.invoke(app, ["flows", "validate"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].startswith("5 flow(s) checked")


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["flows", "validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file or directory" in result.stderr


def test_a_broken_prompt_is_reported_with_the_flows(tmp_path: Path) -> None:
    (tmp_path / "prompts" / "triage").mkdir(parents=True)
    (tmp_path / "prompts" / "triage" / "1.yaml").write_text("system: hi\nuser: '{{ Subject }}'\n")
    (tmp_path / "webhook").mkdir()
    flow = (FIXTURES / "webhook" / "triage.yaml").read_text()
    (tmp_path / "webhook" / "triage.yaml").write_text(flow)
    result = runner.invoke(app, ["flows", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'prompts' / 'triage' / '1.yaml'}:1:1: error[prompt-invalid]: " in (
        result.stdout
    )
    assert "error[prompt-missing]: prompt triage@1 does not exist" in result.stdout


def test_list_shows_source_and_status() -> None:
    result = runner.invoke(app, ["flows", "list", str(FIXTURES)])
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["crm/no_source", "-", "invalid:", "4", "error(s)"],
        ["webhook/no_prompt", "webhook/ticket", "invalid:", "1", "error(s)"],
        ["webhook/summary", "webhook/ticket", "ok,", "1", "warning(s)"],
        ["webhook/triage", "webhook/ticket", "ok"],
        ["webhook/typo", "webhook/ticket", "invalid:", "1", "error(s)"],
    ]


def test_the_repository_schema_file_is_current() -> None:
    result = runner.invoke(app, ["flows", "schema", "--check", "--output", str(REPO_SCHEMA)])
    assert result.exit_code == 0, (
        f"{result.stderr}mappings/schema.json no longer matches FlowSpec: "
        "run `switchyard flows schema` and commit the file"
    )


def test_schema_writes_and_checks(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    missing = runner.invoke(app, ["flows", "schema", "--check", "--output", str(target)])
    assert missing.exit_code == 1
    assert "is missing" in missing.stderr
    written = runner.invoke(app, ["flows", "schema", "--output", str(target)])
    assert written.exit_code == 0
    text = target.read_text()
    assert text == flow_schema_text()
    assert text.endswith("}\n")
    assert text.startswith('{\n  "$defs": {')
    assert (
        runner.invoke(app, ["flows", "schema", "--check", "--output", str(target)]).exit_code == 0
    )
    target.write_text(text.replace("JMESPath", "jmespath", 1))
    stale = runner.invoke(app, ["flows", "schema", "--check", "--output", str(target)])
    assert stale.exit_code == 1
    assert "is stale" in stale.stderr
    assert "switchyard flows schema" in stale.stderr


def test_the_schema_accepts_a_valid_flow_and_rejects_an_unknown_key() -> None:
    schema = json.loads(flow_schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    valid = yaml.safe_load((FIXTURES / "webhook" / "triage.yaml").read_text())
    assert list(validator.iter_errors(valid)) == []
    typo = yaml.safe_load((FIXTURES / "webhook" / "typo.yaml").read_text())
    assert not validator.is_valid(typo)
