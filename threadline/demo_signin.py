"""The demo app's sign-in, kept in the data directory so `scripts/start` can run again.

`threadline demo --reuse` saves the app, its API token and the operator's login to
`<data dir>/demo-signin.json` (readable by the owner only) and, on the next run against the
same database, finds the app there instead of creating another one. `/demo/site` shows the
widget of that app.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SIGNIN_FILE = "demo-signin.json"


@dataclass(frozen=True, slots=True)
class DemoSignin:
    database: str  # the database URL without its password: a file is for one database
    app: int
    token: str
    email: str
    password: str
    conversations: int


def signin_path(data_dir: Path) -> Path:
    return data_dir / SIGNIN_FILE


def load(data_dir: Path) -> DemoSignin | None:
    """The saved sign-in, or None when there is none (or it cannot be read as one)."""
    try:
        raw = json.loads(signin_path(data_dir).read_text(encoding="utf-8"))
        return DemoSignin(
            database=str(raw["database"]),
            app=int(raw["app"]),
            token=str(raw["token"]),
            email=str(raw["email"]),
            password=str(raw["password"]),
            conversations=int(raw["conversations"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(data_dir: Path, signin: DemoSignin) -> Path:
    """Write the sign-in readable and writable by the owner only (it holds a password)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = signin_path(data_dir)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(asdict(signin), file)
    os.replace(temporary, path)
    return path


def forget(data_dir: Path) -> None:
    signin_path(data_dir).unlink(missing_ok=True)
