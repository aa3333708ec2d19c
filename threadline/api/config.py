"""Settings of the HTTP API (environment, prefix THREADLINE_), kept on `app.state.api_settings`.

Read at request time from the app's state, so a deployment (or a test) can swap them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline.settings import DEFAULT_DATA_DIR

# Files people attach in chats: pictures, documents, archives, recordings.
DEFAULT_ATTACHMENT_TYPES = (
    "image/*",
    "audio/*",
    "video/*",
    "text/plain",
    "text/csv",
    "application/pdf",
    "application/zip",
    "application/json",
    "application/msword",
    "application/vnd.*",
    "application/octet-stream",
)


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # Attachments live under `<data_dir>/attachments/`.
    data_dir: Path = DEFAULT_DATA_DIR
    # 25 MiB: what mail servers commonly accept, so e-mailed files fit too.
    attachment_max_bytes: int = 25 * 1024 * 1024
    # MIME types accepted for upload; `type/*` matches a whole family.
    attachment_types: tuple[str, ...] = DEFAULT_ATTACHMENT_TYPES
    # Per-token limits in the `limits` notation ("600/minute;20000/hour"); empty: no limit.
    # 600 a minute leaves an integration ten requests a second, far above a human operator.
    rate_limit: str = "600/minute"
    # `memory://` (one process) or `redis://host:port/db` (shared by every process).
    rate_limit_storage: str = "memory://"
    # Keeps the counters of deployments that share one Redis apart.
    rate_limit_key_prefix: str = "threadline"
