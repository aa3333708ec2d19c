"""Debian's Chromium for Playwright: where it is, and the flags to run it here (headless,
no sandbox, no outside network). Shared by the browser tests and scripts/screenshots.py."""

from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """The system's Chromium (`THREADLINE_CHROMIUM` first); nothing is ever downloaded."""
    return os.environ.get("THREADLINE_CHROMIUM") or shutil.which("chromium")
