"""Precision and recall of the detectors over the labelled corpus, per data class."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.gateway.redaction import ALL, CREDENTIAL_CLASSES, detect

CORPUS = Path(__file__).parents[3] / "fixtures" / "redaction" / "corpus.yaml"


def load() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    return entries


def score() -> tuple[dict[str, Counter[str]], list[str]]:
    """Per class: tp / fp / fn counts; plus a line per mistake (for the report)."""
    tally: dict[str, Counter[str]] = {name: Counter() for name in ALL}
    mistakes: list[str] = []
    for entry in load():
        expected = Counter((e["class"], e["value"]) for e in entry["expected"])
        found = Counter((s.data_class, s.text) for s in detect(entry["text"]))
        for (name, value), _n in (expected | found).items():
            hit = min(expected[(name, value)], found[(name, value)])
            tally[name]["tp"] += hit
            tally[name]["fn"] += expected[(name, value)] - hit
            tally[name]["fp"] += found[(name, value)] - hit
            if hit < max(expected[(name, value)], found[(name, value)]):
                kind = "missed" if expected[(name, value)] > hit else "false positive"
                mistakes.append(f"{entry['id']}: {kind} {name} {value!r}")
    return tally, mistakes


def ratio(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def test_corpus_is_large_and_labelled() -> None:
    entries = load()
    assert len(entries) >= 200
    assert len({e["id"] for e in entries}) == len(entries)
    labelled = {e["class"] for entry in entries for e in entry["expected"]}
    assert labelled == set(ALL)
    for entry in entries:  # every label is literally in its text
        for e in entry["expected"]:
            assert e["value"] in entry["text"], entry["id"]


def test_precision_and_recall(capsys: pytest.CaptureFixture[str]) -> None:
    tally, mistakes = score()
    rows = []
    for name in ALL:
        t = tally[name]
        precision, recall = ratio(t["tp"], t["tp"] + t["fp"]), ratio(t["tp"], t["tp"] + t["fn"])
        rows.append((name, t["tp"], t["fp"], t["fn"], precision, recall))
    with capsys.disabled():
        print("\n\nclass          tp  fp  fn  precision  recall")
        for name, tp, fp, fn, precision, recall in rows:
            print(f"{name:<13} {tp:>3} {fp:>3} {fn:>3}  {precision:>9.3f}  {recall:>6.3f}")
        for line in mistakes:
            print("  " + line)
    for name, _tp, _fp, _fn, precision, recall in rows:
        if name in CREDENTIAL_CLASSES:
            assert recall == 1.0, name
        else:
            assert precision >= 0.95, name
            assert recall >= 0.95, name
