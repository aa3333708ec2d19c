"""Settings from the environment (prefix THREADLINE_) and command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("threadline-data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR / 'threadline.db'}"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Connections per process; PostgreSQL only (SQLite writes go through one connection).
    pool_size: int = 10


def get_settings() -> Settings:
    return Settings()
