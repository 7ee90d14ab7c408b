"""Versioned prompts: ``mappings/prompts/<name>/<version>.yaml``, referenced as ``name@version``.

A prompt file holds a ``system`` text (the same for every record, so the gateway caches it)
and a ``user`` template whose ``{{ variable }}`` slots are filled from the flow's inputs —
and nothing else: there are no loops, filters or attribute access, so a template can only
place values, never compute with them. Every slot must be an input of the flow using the
prompt; the flow validator checks this before a flow can be enabled.

A version, once used by a call, must not change: the call records carry the version, and
comparing versions is only honest if each one means one text. :attr:`Prompt.digest` lets
the registry (issue 4's rollouts) detect an edited version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import SettingsError

SLOT = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")
BROKEN_SLOT = re.compile(r"\{\{(?!\s*[a-z_][a-z0-9_]*\s*\}\})")


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    system: str = Field(min_length=1)
    user: str = Field(min_length=1)


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    path: Path
    description: str
    system: str
    user: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def slots(self) -> frozenset[str]:
        return frozenset(SLOT.findall(self.user))

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.system}\x00{self.user}".encode()).hexdigest()

    def render(self, values: Mapping[str, str]) -> str:
        """The user turn with every slot filled; a slot without a value is an error."""
        missing = self.slots - set(values)
        if missing:
            raise KeyError(f"prompt {self.ref} needs values for {sorted(missing)}")
        return SLOT.sub(lambda match: values[match.group(1)], self.user)


class PromptRegistry:
    def __init__(self, prompts: Mapping[str, Prompt] | None = None) -> None:
        self._prompts: dict[str, Prompt] = dict(prompts or {})

    @classmethod
    def load(cls, root: Path) -> PromptRegistry:
        """Every ``<root>/<name>/<version>.yaml``; a malformed file stops the start."""
        prompts: dict[str, Prompt] = {}
        for path in sorted(root.glob("*/*.yaml")):
            prompt = load_prompt(path)
            prompts[prompt.ref] = prompt
        return cls(prompts)

    def get(self, ref: str) -> Prompt | None:
        return self._prompts.get(ref)

    def versions(self, name: str) -> list[int]:
        return sorted(p.version for p in self._prompts.values() if p.name == name)

    def refs(self) -> list[str]:
        return sorted(self._prompts)


def load_prompt(path: Path) -> Prompt:
    name, stem = path.parent.name, path.stem
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", name) or not re.fullmatch(r"[1-9][0-9]*", stem):
        raise SettingsError(
            f"prompt file {path}: expected mappings/prompts/<name>/<version>.yaml with a "
            "lower-case name and a whole-number version, e.g. lead_qualification/1.yaml"
        )
    try:
        raw: Any = yaml.safe_load(path.read_text())
        parsed = PromptFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise SettingsError(f"prompt file {path} is invalid: {exc}") from None
    broken = BROKEN_SLOT.search(parsed.user)
    if broken:
        line = parsed.user.count("\n", 0, broken.start()) + 1
        raise SettingsError(
            f"prompt file {path}: line {line} of user has a '{{{{' that is not a slot; "
            "write slots as {{ variable_name }} in lower_snake_case"
        )
    return Prompt(name, int(stem), path, parsed.description, parsed.system, parsed.user)
