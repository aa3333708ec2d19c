"""Check a whole-suite coverage report (`coverage json`) against the floors.

    python scripts/check_coverage.py coverage.json

The floors are kept in one place, `[tool.threadline.coverage]` in pyproject.toml:
`line_floor` for the line coverage of threadline/ and `core_branch_floor` for the branch
coverage of threadline/core/ (percent). THREADLINE_COVERAGE_LINE_FLOOR and
THREADLINE_COVERAGE_CORE_BRANCH_FLOOR override them for one run. Exits 1 when a figure is
below its floor. Line coverage is computed from the lines alone (`coverage report`'s total
mixes lines and branches when branches are measured).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def floors() -> tuple[float, float]:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table: dict[str, Any] = settings["tool"]["threadline"]["coverage"]
    line = os.environ.get("THREADLINE_COVERAGE_LINE_FLOOR") or table["line_floor"]
    branch = os.environ.get("THREADLINE_COVERAGE_CORE_BRANCH_FLOOR") or table["core_branch_floor"]
    return float(line), float(branch)


def figures(report: dict[str, Any]) -> tuple[float, float]:
    """Line coverage of everything measured (threadline/), branch coverage of threadline/core/."""
    totals = report["totals"]
    lines = 100 * totals["covered_lines"] / totals["num_statements"]
    core = [
        f["summary"]
        for name, f in report["files"].items()
        if name.replace(os.sep, "/").startswith("threadline/core/")
    ]
    branches = sum(s["num_branches"] for s in core)
    covered = sum(s["covered_branches"] for s in core)
    return lines, 100 * covered / branches if branches else 100.0


def main() -> int:
    report = json.loads(Path(sys.argv[1]).read_text())
    line_floor, branch_floor = floors()
    lines, core_branches = figures(report)
    print(f"line coverage of threadline/: {lines:.2f}% (floor {line_floor}%)")
    print(f"branch coverage of threadline/core/: {core_branches:.2f}% (floor {branch_floor}%)")
    failed = False
    if lines < line_floor:
        print(
            f"error: line coverage {lines:.2f}% is below its floor {line_floor}%", file=sys.stderr
        )
        failed = True
    if core_branches < branch_floor:
        print(
            f"error: branch coverage of threadline/core/ {core_branches:.2f}% is below its floor"
            f" {branch_floor}%",
            file=sys.stderr,
        )
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
