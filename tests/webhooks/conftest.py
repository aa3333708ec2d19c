"""The webhook tests deliver to receivers on loopback: private targets are allowed here
(tests of the refusal remove the setting)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def allow_private_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_WEBHOOK_ALLOW_PRIVATE", "1")
