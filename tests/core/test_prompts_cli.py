"""`switchyard prompts`: list, roll out, roll back, end and compare from a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from tests.conftest import TEST_KEY

runner = CliRunner()
FIXTURES = Path(__file__).parents[1] / "fixtures" / "mappings"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SWITCHYARD_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("SWITCHYARD_LOG_LEVEL", "warning")
    monkeypatch.setenv("SWITCHYARD_MAPPINGS_DIR", str(FIXTURES))
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["tenants", "create", "acme"]).exit_code == 0


def _ok(*args: str) -> str:
    result = runner.invoke(app, ["prompts", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_rollout_from_the_terminal(env: None) -> None:
    listed = _ok("list", "--tenant", "acme")
    assert "ticket_test  (pinned by webhook/ticket_deletions@1, webhook/ticket_updates@1)" in listed
    assert "ticket_test@2" in listed
    assert "rollout:" not in listed

    started = _ok("rollout", "ticket_test", "--tenant", "acme", "--version", "2", "--share", "5")
    assert "5% of calls on version 2 (sticky per record" in started
    assert "rollout: ticket_test: 5% of calls on version 2" in _ok("list", "--tenant", "acme")
    widened = _ok("rollout", "ticket_test", "--tenant", "acme", "--version", "2", "--share", "50")
    assert "50% of calls" in widened
    assert "rolled back: ticket_test: 0% of calls" in _ok(
        "rollback", "ticket_test", "--tenant", "acme"
    )

    compared = _ok("compare", "ticket_test", "--tenant", "acme")
    assert "rollout: 0% on version 2" in compared
    assert "no calls used this prompt in the range" in compared
    assert "has ended" in _ok("end", "ticket_test", "--tenant", "acme")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollout", "nope", "--version", "2", "--share", "5"], "no prompt named 'nope'"),
        (["rollout", "ticket_test", "--version", "2", "--share", "five"], "is not a number"),
        (["rollout", "ticket_test", "--version", "9", "--share", "5"], "is not installed"),
        (["rollout", "ticket_test", "--version", "2", "--share", "0.001"], "0.01% steps"),
        (["rollback", "ticket_test"], "has no rollout"),
        (["end", "ticket_test"], "has no rollout"),
    ],
)
def test_mistakes_exit_2_with_the_fix(env: None, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["prompts", *args, "--tenant", "acme"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unknown_tenant_is_explained(env: None) -> None:
    result = runner.invoke(app, ["prompts", "list", "--tenant", "nobody"])
    assert result.exit_code == 2
    assert "nobody" in result.output
