"""The savings benchmark's workload: the file's schema, and the calls it expands to.

:func:`load` reads ``workload.yaml`` (beside this module unless a path is given) into a
:class:`Workload`; :func:`build_calls` expands one of its profiles into the list of
:class:`Call` both arms replay: arrival times (a seeded Poisson process over the profile's
piecewise-constant rate, spikes included), the task of each call, its CRM record, and exact
repeats. Pure and deterministic: the same file and profile give the same calls, so the two
arms see the same requests at the same (virtual) times.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.gateway.routing import TaskKind

DEFAULT_WORKLOAD = Path(__file__).with_name("workload.yaml")
RecordKind = Literal["ticket", "email", "account"]
SLOT = re.compile(r"\{([a-z_]+)(?: (\d+) (\d+))?\}")
BUILTIN_SLOTS = frozenset({"int", "date", "serial"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Spike(_Strict):
    start_minute: float = Field(ge=0)
    minutes: float = Field(gt=0)
    per_minute: float = Field(gt=0)


class Profile(_Strict):
    """One way to run the workload: its schedule (virtual minutes) and compression."""

    minutes: float = Field(gt=0)
    base_per_minute: float = Field(gt=0)
    spikes: tuple[Spike, ...] = ()
    repeat_share: float = Field(0.0, ge=0, le=1)
    spike_repeat_share: float = Field(0.0, ge=0, le=1)
    repeat_within_seconds: float = Field(1.0, gt=0)
    time_scale: float = Field(gt=0, le=1)
    limits_factor: float = Field(1.0, gt=0)

    def rate_at(self, minute: float) -> float:
        """Arrivals per virtual minute at ``minute``."""
        for spike in self.spikes:
            if spike.start_minute <= minute < spike.start_minute + spike.minutes:
                return spike.per_minute
        return self.base_per_minute

    def in_spike(self, minute: float) -> bool:
        return self.rate_at(minute) != self.base_per_minute

    def boundaries(self) -> list[float]:
        """Minutes at which the rate may change, ascending, ending with the last minute."""
        edges = {self.minutes}
        for spike in self.spikes:
            edges.update((spike.start_minute, spike.start_minute + spike.minutes))
        return sorted(edge for edge in edges if 0 < edge <= self.minutes)


class TaskSpec(_Strict):
    share: float = Field(gt=0, le=1)
    priority: Literal["interactive", "background"]
    feature: str
    record: RecordKind
    record_tokens: tuple[int, int]
    instruction: str
    response_cache: bool = False
    tool: dict[str, Any] | None = None


class Region(_Strict):
    name: str
    currency: Literal["EUR", "USD"]
    tax: str
    hosting: str


class Reference(_Strict):
    title: str
    sections: tuple[str, ...]
    price_list_title: str
    price_list: tuple[tuple[str, str, int, int, str, str], ...]  # sku, name, EUR, USD, unit, notes
    regions: tuple[Region, ...]


class RecordTemplate(_Strict):
    head: str
    sentences: tuple[str, ...] = Field(min_length=1)

    def slots(self) -> set[str]:
        return {m.group(1) for text in (self.head, *self.sentences) for m in SLOT.finditer(text)}


class Workload(_Strict):
    name: str
    seed: int
    interactions_per_month: int = Field(gt=0)
    naive_max_tokens: int = Field(gt=0)
    profiles: dict[str, Profile]
    tasks: dict[TaskKind, TaskSpec]
    records: dict[RecordKind, RecordTemplate]
    vocabulary: dict[str, tuple[str, ...]]
    system: str
    reference: Reference

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        total = sum(task.share for task in self.tasks.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"task shares must add up to 1, not {total:g}")
        for kind, template in self.records.items():
            unknown = template.slots() - set(self.vocabulary) - BUILTIN_SLOTS
            if unknown:
                raise ValueError(f"records.{kind}: no vocabulary list for {sorted(unknown)}")
        for task, spec in self.tasks.items():
            if spec.record not in self.records:
                raise ValueError(f"tasks.{task}: no records.{spec.record} template")
        return self

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ValueError(
                f"no profile {name!r}; the workload has {sorted(self.profiles)}"
            ) from None

    def reference_text(self) -> str:
        """The reference document: handbook sections, price list, regional notes."""
        ref = self.reference
        lines = [ref.title, "", *(section.strip() + "\n" for section in ref.sections)]
        lines.append(ref.price_list_title)
        lines += [
            f"- {sku} | {name} | EUR {eur:,} / USD {usd:,} {unit} | {notes}"
            for sku, name, eur, usd, unit, notes in ref.price_list
        ]
        lines += ["", "9. Regional terms"]
        for region in ref.regions:
            prices = "; ".join(
                f"{row[0]} {region.currency} {row[2 if region.currency == 'EUR' else 3]:,}"
                for row in ref.price_list
            )
            lines.append(
                f"- {region.name}: invoices in {region.currency}, {region.tax} added; data "
                f"hosted in {region.hosting}; SLA credits are paid as invoice credits, never "
                f"in cash. Prices per seat per month (yearly billing): {prices}."
            )
        return "\n".join(lines)


def load(path: Path | None = None) -> Workload:
    raw = yaml.safe_load((path or DEFAULT_WORKLOAD).read_text(encoding="utf-8"))
    return Workload.model_validate(raw)


@dataclass(frozen=True)
class Call:
    """One request of the workload, as the application would make it (no model chosen)."""

    index: int
    at: float  # virtual seconds from the start
    task: TaskKind
    interactive: bool
    feature: str
    body: Mapping[str, Any]  # system, messages, and tools if any
    response_cache: bool = False  # through Switchyard: opt in to its response cache
    repeat_of: int | None = None


def arrivals(profile: Profile, rng: random.Random) -> list[float]:
    """Poisson arrivals (virtual seconds) over the profile's piecewise-constant rate."""
    times: list[float] = []
    start = 0.0
    for end in profile.boundaries():
        rate = profile.rate_at(start) / 60  # per second
        t = start * 60
        while True:
            t += rng.expovariate(rate)
            if t >= end * 60:
                break
            times.append(t)
        start = end
    return times


def build_calls(workload: Workload, profile: Profile) -> list[Call]:
    """Every call of one run, ordered by arrival time (repeats included)."""
    rng = random.Random(workload.seed)
    reference = _document(workload)
    records = _Records(workload, rng)
    kinds = list(workload.tasks)
    weights = [workload.tasks[kind].share for kind in kinds]
    planned: list[tuple[float, TaskKind, dict[str, Any], int | None]] = []
    for at in arrivals(profile, rng):
        kind = rng.choices(kinds, weights)[0]
        spec = workload.tasks[kind]
        body = _body(workload.system, reference, spec, records.make(spec))
        planned.append((at, kind, body, None))
        if spec.priority == "background":
            share = (
                profile.spike_repeat_share if profile.in_spike(at / 60) else profile.repeat_share
            )
            if rng.random() < share:
                again = at + rng.uniform(0, profile.repeat_within_seconds)
                planned.append((again, kind, body, len(planned) - 1))
    order = sorted(range(len(planned)), key=lambda i: planned[i][0])
    position = {old: new for new, old in enumerate(order)}
    calls = []
    for new, old in enumerate(order):
        at, kind, body, repeat_of = planned[old]
        spec = workload.tasks[kind]
        calls.append(
            Call(
                index=new,
                at=at,
                task=kind,
                interactive=spec.priority == "interactive",
                feature=spec.feature,
                body=body,
                response_cache=spec.response_cache,
                repeat_of=None if repeat_of is None else position[repeat_of],
            )
        )
    return calls


def _document(workload: Workload) -> dict[str, Any]:
    return {
        "type": "document",
        "title": workload.reference.title,
        "source": {"type": "text", "media_type": "text/plain", "data": workload.reference_text()},
    }


def _body(system: str, reference: Mapping[str, Any], spec: TaskSpec, record: str) -> dict[str, Any]:
    task = {"type": "text", "text": f"{spec.instruction}\n\n{record}"}
    body: dict[str, Any] = {
        "system": system,
        "messages": [{"role": "user", "content": [reference, task]}],
    }
    if spec.tool is not None:
        body["tools"] = [spec.tool]
    return body


class _Records:
    """Made-up CRM records of a target size (~3 characters a token), from the templates."""

    def __init__(self, workload: Workload, rng: random.Random) -> None:
        self.templates = workload.records
        self.vocabulary = workload.vocabulary
        self.rng = rng
        self.serial = 40_000

    def make(self, spec: TaskSpec) -> str:
        self.serial += 1
        template = self.templates[spec.record]
        low, high = spec.record_tokens
        chars = 3 * self.rng.randint(low, high)
        text = self._fill(template.head)
        while len(text) < chars:
            text += " " + self._fill(self.rng.choice(template.sentences))
        return text

    def _fill(self, text: str) -> str:
        return SLOT.sub(self._slot, text)

    def _slot(self, match: re.Match[str]) -> str:
        name, low, high = match.groups()
        if name == "int":
            return str(self.rng.randint(int(low), int(high)))
        if name == "date":
            return f"2026-{self.rng.randint(1, 11):02d}-{self.rng.randint(1, 28):02d}"
        if name == "serial":
            return str(self.serial)
        return self.rng.choice(self.vocabulary[name])
