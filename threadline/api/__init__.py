"""The Carrot quest compatible REST API and Threadline's `/ext/` extensions."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    """Mount the API's routers and error handlers on `app`."""
