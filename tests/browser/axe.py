"""axe-core in the browser tests: injects `frontend/node_modules/axe-core/axe.min.js` (pinned in
`frontend/package-lock.json`) into a page and runs it.

The file comes with the front end's dev tools (`scripts/frontend-install`, which
`scripts/frontend-check` and so `scripts/test` run). When it is missing, the helper runs that
installer; without Node.js and npm the test is skipped, except under `CI=true`, where that is
a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
INSTALLER = ROOT / "scripts" / "frontend-install"

# The impacts that fail a test: axe's "serious" and "critical".
FAILING = ("serious", "critical")


@cache
def _installed() -> str | None:
    """axe-core's source, installing the front end's dev tools first if needed; or why not."""
    if not AXE.exists():
        if shutil.which("node") is None or shutil.which("npm") is None:
            return "Node.js and npm are not installed (apt-get install nodejs npm)"
        done = subprocess.run(
            [str(INSTALLER)], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0 or not AXE.exists():
            return f"{INSTALLER.name} failed: {(done.stdout + done.stderr)[-2000:]}"
    return None


def axe_source() -> str:
    """The text of axe.min.js; skips the test (fails it under CI) when it cannot be had."""
    problem = _installed()
    if problem is not None:
        message = f"axe-core is not available: {problem}"
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    return AXE.read_text(encoding="utf-8")


def violations(page: Page, include: str | None = None) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now (within `include`, a CSS selector, if given)."""
    # Evaluated by the browser's debugging protocol: the inbox's Content-Security-Policy
    # (no inline script) does not apply to it.
    loaded = page.evaluate(axe_source() + "\n;typeof window.axe")
    assert loaded == "object", f"axe-core did not load: {loaded}"
    found: list[dict[str, Any]] = page.evaluate(
        """async (include) => {
            const result = await window.axe.run(include ? { include: [include] } : document, {
                resultTypes: ["violations"],
            });
            return result.violations.map((v) => ({
                id: v.id,
                impact: v.impact,
                help: v.help,
                helpUrl: v.helpUrl,
                nodes: v.nodes.map((n) => ({
                    target: n.target,
                    impact: n.impact,
                    summary: n.failureSummary,
                    html: n.html,
                })),
            }));
        }""",
        include,
    )
    return found


def readable(found: list[dict[str, Any]]) -> str:
    """Violations as lines a person reads: rule, impact, what to do, and each element."""
    lines: list[str] = []
    for v in found:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for node in v["nodes"]:
            lines.append(f"    {' > '.join(map(str, node['target']))}: {node['html'][:200]}")
            for reason in (node["summary"] or "").splitlines():
                lines.append(f"        {reason.strip()}")
    return "\n".join(lines)


def assert_no_serious_violations(page: Page, where: str, include: str | None = None) -> None:
    """No serious or critical axe violation on the page (or within `include`)."""
    found = [v for v in violations(page, include) if v["impact"] in FAILING]
    assert not found, f"axe-core: serious or critical violations on {where}:\n{readable(found)}"
