"""Where attachment bytes live. `LocalStorage` keeps them in a directory; anything with
the same three methods (an object store, say) can take its place."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Protocol

import anyio


class Storage(Protocol):
    async def save(self, key: str, data: bytes) -> None: ...

    async def load(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class LocalStorage:
    """Files under `root`, one per key; keys are ours (never a user's file name)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key {key!r} leaves the storage directory")
        return path

    def _save(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write aside, then rename: a reader never sees half a file.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def _load(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def save(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._save, key, data)

    async def load(self, key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._load, key)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self._delete, key)
