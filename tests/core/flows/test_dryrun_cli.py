"""``switchyard flows test``: a dry run from the terminal, on the local Anthropic sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from tests.conftest import TEST_KEY

runner = CliRunner()
MAPPINGS = Path(__file__).parents[2] / "fixtures" / "mappings"
TICKET = {
    "subject": "Printer on fire",
    "body": "The printer burns since the update.",
    "customer_email": "ada@example.com",
    "status": "open",
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("SWITCHYARD_LOG_LEVEL", "warning")
    monkeypatch.setenv("SWITCHYARD_MAPPINGS_DIR", str(MAPPINGS))
    monkeypatch.delenv("SWITCHYARD_ANTHROPIC_API_KEY", raising=False)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    record = tmp_path / "ticket.json"
    record.write_text(json.dumps(TICKET))
    return record


def test_a_dry_run_prints_the_prompt_answer_and_patch(env: Path) -> None:
    assert runner.invoke(app, ["tenants", "create", "acme"]).exit_code == 0
    result = runner.invoke(app, ["flows", "test", "webhook/ticket_updates", "--record", str(env)])
    assert result.exit_code == 0, result.output
    assert "Anthropic SANDBOX" in result.output
    assert "<subject>Printer on fire</subject>" in result.output
    assert "ada@example.com" not in result.output  # pseudonymized before it is shown or sent
    assert "patch (not written)" in result.output
    as_json = runner.invoke(
        app, ["flows", "test", "webhook/ticket_updates", "--record", str(env), "--json"]
    )
    run = json.loads(as_json.output)
    assert run["sandbox"] is True
    assert set(run["patch"]) == {"category", "summary"}


def test_refusals_say_what_to_do(env: Path, tmp_path: Path) -> None:
    no_tenant = runner.invoke(
        app, ["flows", "test", "webhook/ticket_updates", "--record", str(env)]
    )
    assert no_tenant.exit_code == 2
    assert "switchyard tenants create NAME" in no_tenant.output
    runner.invoke(app, ["tenants", "create", "acme"])
    runner.invoke(app, ["tenants", "create", "globex"])
    two = runner.invoke(app, ["flows", "test", "webhook/ticket_updates", "--record", str(env)])
    assert two.exit_code == 2
    assert "name the tenant with --tenant" in two.output
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    bad = runner.invoke(
        app,
        ["flows", "test", "webhook/ticket_updates", "--record", str(listed), "--tenant", "acme"],
    )
    assert bad.exit_code == 2
    assert "must be a JSON object" in bad.output
    unknown = runner.invoke(
        app, ["flows", "test", "webhook/nope", "--record", str(env), "--tenant", "acme"]
    )
    assert unknown.exit_code == 1
    assert "webhook/nope" in unknown.output
