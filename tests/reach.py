"""Reach of the randomized tests: which transitions a run exercised, and a guard.

A property or stateful test names the transitions it exists to exercise. Each time one
happens the test calls `Reach.hit`, which counts it and reports it to hypothesis
(`hypothesis.event`, shown by `pytest --hypothesis-show-statistics`). After the run,
`Reach.assert_reached` fails when a listed transition never happened: a strategy that no
longer reaches a case fails loudly instead of passing without testing it.

With THREADLINE_REACH_LOG set to a file, each finished run appends one JSON line with its
counts (how the figures in tests/README.md were measured).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable

import hypothesis


class Reach:
    def __init__(self, name: str, required: Iterable[str]) -> None:
        self.name = name
        self.required = tuple(required)
        self.counts: Counter[str] = Counter()

    def hit(self, label: str) -> None:
        self.counts[label] += 1
        hypothesis.event(label)

    def assert_reached(self) -> None:
        log = os.environ.get("THREADLINE_REACH_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"test": self.name, "counts": dict(self.counts)}) + "\n")
        missing = [label for label in self.required if not self.counts[label]]
        assert not missing, (
            f"{self.name}: never reached {missing} in this run (reached: {dict(self.counts)})"
        )
