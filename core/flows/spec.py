"""The flow file format: one YAML file per flow, ``mappings/<platform>/<flow>.yaml``.

A flow says which records trigger it (``source``), which fields may leave the company
(``inputs``, an allow-list), what Claude is asked (``task`` and a versioned ``prompt``), the
shape the answer must have (``output``), how the answer maps back onto a record
(``writeback``) and whether a person approves the write first (``review``).

Expressions (conditions, field paths, transforms) are JMESPath, evaluated by
:mod:`core.flows.expressions`; this module only holds them as strings and checks that they
compile. ``mappings/schema.json`` is generated from :class:`FlowSpec` (``switchyard flows
schema``) so editors validate flow files as people type.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.base import ChangeEvent, ChangeType
from core.flows import expressions
from core.gateway.redaction.policy import RedactionPolicy

PROMPT_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_\-]*)@(?P<version>[1-9][0-9]*)$")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Expression = Annotated[
    str,
    Field(
        min_length=1,
        description="A JMESPath expression (https://jmespath.org) with Switchyard's functions.",
    ),
]


def _compiles(value: str | None) -> str | None:
    if value is not None:
        expressions.compile_expression(value)  # raises ValueError with the parser's reason
    return value


class FlowSource(Strict):
    connector: str = Field(description="The connector the records come from, e.g. salesforce.")
    object: str = Field(description="The platform object, e.g. Lead, contacts, account.")
    change_types: list[ChangeType] = Field(
        default_factory=lambda: [ChangeType.CREATED, ChangeType.UPDATED]
    )
    when_changed: list[str] = Field(
        default_factory=list,
        description="Updates match only when one of these fields changed (empty: any).",
    )
    condition: Expression | None = Field(
        default=None,
        description=(
            "Checked on the fetched record before anything is sent; false skips the job. "
            "Evaluated over {record, event}."
        ),
    )

    _check_condition = field_validator("condition")(_compiles)

    def matches(self, connector: str, event: ChangeEvent) -> bool:
        if connector != self.connector or event.object != self.object:
            return False
        if event.change_type not in self.change_types:
            return False
        if event.change_type is ChangeType.UPDATED and self.when_changed:
            return bool(set(self.when_changed) & set(event.changed_fields))
        return True


class Redaction(StrEnum):
    MASK = "mask"  # the value is replaced by a fixed mask keeping its shape's hint
    PSEUDONYMIZE = "pseudonymize"  # a stable per-tenant token: equal values, equal tokens


class InputSpec(Strict):
    field: str = Field(
        description="The source record's field (dotted for related records: Account.Name)."
    )
    redact: Redaction | None = None
    max_chars: int | None = Field(default=None, gt=0, le=200_000)
    transform: Expression | None = Field(
        default=None, description="Applied to the value (@) before redaction and truncation."
    )
    required: bool = Field(
        default=False, description="Skip the job (not fail) when the field is empty."
    )

    _check_transform = field_validator("transform")(_compiles)

    @field_validator("field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        if not FIELD_NAME.match(value):
            raise ValueError(f"{value!r} is not a field name (letters, digits, _ and .)")
        return value


class OutputType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ARRAY = "array"


class OutputField(Strict):
    type: OutputType
    description: str = ""
    required: bool = True
    enum: list[str | int] | None = Field(default=None, min_length=1)
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    minimum: float | None = None
    maximum: float | None = None
    items: OutputType | None = Field(default=None, description="Element type of an array.")
    max_items: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _coherent(self) -> OutputField:
        if self.type is OutputType.ARRAY and self.items is None:
            raise ValueError("an array output needs items: (its element type)")
        if self.type is not OutputType.ARRAY and (self.items or self.max_items):
            raise ValueError("items and max_items apply to arrays only")
        numeric = self.type in (OutputType.INTEGER, OutputType.NUMBER)
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError("minimum and maximum apply to integer and number outputs only")
        textual = self.type is OutputType.STRING
        if not textual and (self.min_length is not None or self.max_length is not None):
            raise ValueError("min_length and max_length apply to string outputs only")
        return self

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type.value}
        if self.description:
            schema["description"] = self.description
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        for name, key in (
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
            ("minimum", "minimum"),
            ("maximum", "maximum"),
            ("max_items", "maxItems"),
        ):
            value = getattr(self, name)
            if value is not None:
                schema[key] = value
        if self.items is not None:
            schema["items"] = {"type": self.items.value}
        return schema


class OutputSpec(Strict):
    tool_name: str = Field(
        default="record_result",
        pattern=r"^[a-zA-Z0-9_-]{1,64}$",
        description="The tool Claude is made to call with the answer.",
    )
    description: str = Field(
        default="Record the result for this record.",
        description="The tool's description, as Claude sees it.",
    )
    fields: dict[str, OutputField] = Field(min_length=1)

    @field_validator("fields")
    @classmethod
    def _names(cls, fields: dict[str, OutputField]) -> dict[str, OutputField]:
        for name in fields:
            if not re.match(r"^[a-z_][a-z0-9_]*$", name):
                raise ValueError(f"output field {name!r}: use lower_snake_case names")
        return fields

    def json_schema(self) -> dict[str, Any]:
        """The tool's ``input_schema``: what Claude must fill and what is validated on return."""
        return {
            "type": "object",
            "properties": {name: spec.json_schema() for name, spec in self.fields.items()},
            "required": [name for name, spec in self.fields.items() if spec.required],
            "additionalProperties": False,
        }


class WritebackField(Strict):
    from_: Expression = Field(
        alias="from",
        description="Where the value comes from, over {output, record}: e.g. output.rating.",
    )
    transform: Expression | None = Field(default=None, description="Applied to the value (@).")
    skip_if_null: bool = Field(
        default=True, description="Leave the target field alone when the value is null."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _check_from = field_validator("from_")(_compiles)
    _check_transform = field_validator("transform")(_compiles)


class WritebackAction(StrEnum):
    UPDATE = "update"  # patch an existing record (the source's, or record_id's)
    CREATE = "create"  # make a new record; the connector makes the create idempotent


class WritebackSpec(Strict):
    action: WritebackAction = Field(
        default=WritebackAction.UPDATE,
        description="update an existing record (default) or create a new one.",
    )
    connection: str | None = Field(
        default=None,
        description="Another connection of the tenant, by name (default: the source's).",
    )
    object: str | None = Field(default=None, description="Target object (default: source's).")
    record_id: Expression | None = Field(
        default=None,
        description="The target record's id, over {output, record} (default: the source's).",
    )
    fields: dict[str, WritebackField] = Field(min_length=1)

    _check_record_id = field_validator("record_id")(_compiles)

    @model_validator(mode="after")
    def _create_has_no_id(self) -> WritebackSpec:
        if self.action is WritebackAction.CREATE and self.record_id is not None:
            raise ValueError("a create has no record_id: the platform assigns the new id")
        return self


class ReviewMode(StrEnum):
    NEVER = "never"
    ALWAYS = "always"


class ReviewWhen(Strict):
    when: Expression = Field(description="Review when true, over {output, record, patch}.")

    _check_when = field_validator("when")(_compiles)


class FlowSpec(Strict):
    """One flow file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$id": "https://switchyard.dev/schemas/flow.json"},
    )

    description: str = ""
    source: FlowSource
    inputs: dict[str, InputSpec] = Field(
        min_length=1, description="Prompt variable -> source field; only these fields leave."
    )
    task: Literal["classify", "extract", "summarize", "reason", "write"]
    prompt: str = Field(description="name@version of a prompt under mappings/prompts/.")
    max_tokens: int | None = Field(default=None, ge=1, le=64_000)
    output: OutputSpec
    writeback: WritebackSpec | None = None
    review: ReviewMode | ReviewWhen | None = Field(
        default=None,
        description="never | always | {when: expression}. Default: always for ERP targets.",
    )
    data_policy: RedactionPolicy | None = Field(
        default=None,
        description=(
            "Per data class (email, phone, payment_card, iban, national_id, ip_address, "
            "api_key, bearer_token, private_key, url_password): redact, block or allow, "
            "over the tenant's policy, for free text found in this flow's prompts."
        ),
    )
    batch: bool = Field(
        default=False,
        strict=True,
        description=(
            "Ask through the Message Batches API at half the price: each job waits "
            "(awaiting_batch) until its batch answers, from minutes up to 24 hours. For flows "
            "whose writes can wait."
        ),
    )

    @field_validator("inputs")
    @classmethod
    def _variable_names(cls, inputs: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in inputs:
            if not re.match(r"^[a-z_][a-z0-9_]*$", name):
                raise ValueError(f"input {name!r}: use lower_snake_case names")
        return inputs

    @field_validator("prompt")
    @classmethod
    def _prompt_ref(cls, value: str) -> str:
        if not PROMPT_REF.match(value):
            raise ValueError(f"{value!r} is not name@version (e.g. lead_qualification@1)")
        return value

    @property
    def prompt_name(self) -> str:
        return self.prompt.split("@", 1)[0]

    @property
    def prompt_version(self) -> int:
        return int(self.prompt.split("@", 1)[1])
