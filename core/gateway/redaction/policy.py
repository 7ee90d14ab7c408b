"""What to do with each data class found in a request: redact, block, or allow.

A tenant sets a :class:`RedactionPolicy`; a flow may override it per class
(:meth:`RedactionPolicy.merged`). Credentials are blocked by default: a placeholder would
hide a leaked key from the model, but the key would still have been sent to us, stored in
CRM notes, and so on; refusing says clearly that it must not travel at all. Personal data
is redacted by default, so the model sees stable placeholders and the caller gets the
originals back.

:func:`apply` checks for blocked classes first (the whole request is refused, naming the
classes and where they were found, never the values), then redacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import TerminalError
from core.gateway.redaction.detectors import ALL, CREDENTIAL_CLASSES, detect
from core.gateway.redaction.placeholders import Redactor, walk_body

Action = Literal["redact", "block", "allow"]


def default_action(data_class: str) -> Action:
    return "block" if data_class in CREDENTIAL_CLASSES else "redact"


class RedactionBlocked(TerminalError):
    problem_type = "data-blocked"
    title = "The request contains data that policy does not allow to be sent"
    status = 422


class RedactionPolicy(BaseModel):
    """Per-class actions; classes not listed take :func:`default_action`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actions: Mapping[str, Action] = Field(default_factory=dict)
    region: str = "US"  # default region for phone numbers written without a country code

    @field_validator("actions")
    @classmethod
    def _known_classes(cls, actions: Mapping[str, Action]) -> Mapping[str, Action]:
        unknown = sorted(set(actions) - set(ALL))
        if unknown:
            raise ValueError(f"unknown data classes: {', '.join(unknown)}")
        return dict(actions)

    def action(self, data_class: str) -> Action:
        return self.actions.get(data_class, default_action(data_class))

    def classes(self, action: Action) -> tuple[str, ...]:
        return tuple(c for c in ALL if self.action(c) == action)

    def merged(self, override: RedactionPolicy) -> RedactionPolicy:
        """This policy with ``override``'s explicit settings on top (tenant, then flow)."""
        region = override.region if "region" in override.model_fields_set else self.region
        return RedactionPolicy(actions={**self.actions, **override.actions}, region=region)


def find_blocked(policy: RedactionPolicy, body: Mapping[str, Any]) -> dict[str, list[str]]:
    """Blocked classes present in the body -> where ("system", "message N"), in order."""
    blocked = policy.classes("block")
    found: dict[str, list[str]] = {}
    if not blocked:
        return found

    def check(text: str, where: str) -> str:
        for span in detect(text, blocked, region=policy.region):
            places = found.setdefault(span.data_class, [])
            if where not in places:
                places.append(where)
        return text

    walk_body(body, check)
    return found


def apply(policy: RedactionPolicy, body: Mapping[str, Any]) -> tuple[dict[str, Any], Redactor]:
    """The body to send upstream and the redactor that restores the answer.

    Raises :class:`RedactionBlocked` when a blocked class is present.
    """
    found = find_blocked(policy, body)
    if found:
        where = "; ".join(f"{c} in {', '.join(places)}" for c, places in sorted(found.items()))
        raise RedactionBlocked(
            f"policy blocks sending: {where}",
            classes=sorted(found),
            locations={c: places for c, places in sorted(found.items())},
        )
    redactor = Redactor(policy.classes("redact"), region=policy.region)
    return redactor.redact_message_body(body), redactor
