"""Threadline: a self-hosted customer-messaging conversation engine."""

import sys

# The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0"

# An older Python (one that skipped the installer's check) gets one clear line, not a SyntaxError.
if sys.version_info < (3, 11):  # noqa: UP036
    raise SystemExit(
        f"Threadline needs Python 3.11 or newer; this is Python {sys.version.split()[0]}"
    )
