"""Public ids: opaque and random, or time-ordered for rows written at a high rate."""

from __future__ import annotations

import re
import time

from core.db.types import new_id, new_ordered_id

SHAPE = re.compile(r"^gwr_[0-9a-f]{20}$")


def test_an_ordered_id_has_the_shape_of_a_random_one() -> None:
    assert SHAPE.match(new_id("gwr"))
    assert SHAPE.match(new_ordered_id("gwr"))


def test_ids_made_in_later_milliseconds_sort_later_and_never_repeat() -> None:
    made = []
    for _ in range(5):
        made += [new_ordered_id("gwr") for _ in range(1_000)]
        time.sleep(0.002)
    assert len(set(made)) == len(made)
    prefixes = [made[n][:15] for n in range(0, len(made), 1_000)]  # gwr_ + 11 digits of time
    assert prefixes == sorted(prefixes)
    assert len(set(prefixes)) == len(prefixes)
    now_ms = time.time_ns() // 1_000_000
    assert 0 <= now_ms - int(made[-1][4:15], 16) < 60_000
