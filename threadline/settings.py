"""Settings from the environment (prefix THREADLINE_) and command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline.db.engine import DEFAULT_SQLITE_BUSY_TIMEOUT, Timeouts

DEFAULT_DATA_DIR = Path("threadline-data")
# An operator signs in about once a week; a lost or shared token stops working by then.
DEFAULT_INBOX_SESSION_HOURS = 168.0
# Ten years: far past any sensible session, and far from the largest date there is.
MAX_INBOX_SESSION_HOURS = 87_600.0


class RedisSettings(BaseSettings):
    """How long Redis may take (the bus, the rate limiter's counters), in seconds: a
    request, a publish after a commit or the bus's subscription gives up then, so a Redis
    that is down or frozen costs at most this (and requests are answered all the same)."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # Redis answers a healthy client in milliseconds, on loopback or a LAN alike.
    redis_connect_timeout: float = Field(1.0, gt=0, le=60, allow_inf_nan=False)
    redis_timeout: float = Field(1.0, gt=0, le=60, allow_inf_nan=False)

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of `redis.asyncio.Redis` that bound every wait."""
        return {
            "socket_connect_timeout": self.redis_connect_timeout,
            "socket_timeout": self.redis_timeout,
        }


class Settings(RedisSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR / 'threadline.db'}"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Connections per process; PostgreSQL only (SQLite writes go through one connection).
    pool_size: int = 10
    # PostgreSQL: how many writes to different conversations may share one transaction
    # when they arrive together (1: each write alone).
    write_batch: int = Field(8, ge=1, le=64)
    # SQLite's `PRAGMA synchronous` (WAL mode): FULL makes every acknowledged write survive
    # a power loss; NORMAL may lose the last commits then (never corrupts the file).
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"

    # SQLite: seconds a statement waits for another process's write lock (a migration, a
    # `threadline check --fix`) before the request is refused (503).
    sqlite_busy_timeout: float = Field(
        DEFAULT_SQLITE_BUSY_TIMEOUT, gt=0, le=3600, allow_inf_nan=False
    )

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    # PostgreSQL timeouts, in seconds: opening a connection, one statement's answer, waiting
    # for a pooled connection. A down or frozen database is answered with 503 within them.
    db_connect_timeout: float = Field(3.0, gt=0, le=3600, allow_inf_nan=False)
    db_statement_timeout: float = Field(5.0, gt=0, le=86_400, allow_inf_nan=False)
    db_pool_timeout: float = Field(3.0, gt=0, le=3600, allow_inf_nan=False)
    # `threadline serve`: log a line for every answered request (failed ones always are).
    access_log: bool = False
    # How long an inbox sign-in lasts (hours, fractions allowed); API tokens never expire.
    inbox_session_hours: float = Field(
        DEFAULT_INBOX_SESSION_HOURS, gt=0, le=MAX_INBOX_SESSION_HOURS, allow_inf_nan=False
    )

    def db_timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.db_connect_timeout,
            statement=self.db_statement_timeout,
            pool=self.db_pool_timeout,
        )


def get_settings() -> Settings:
    return Settings()
