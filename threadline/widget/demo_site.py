"""`GET /demo/site`: a made-up shop page that embeds the widget, the way a customer's site
would (a script tag with the app's id, nothing else)."""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources


@cache
def _page() -> str:
    return resources.files("threadline.widget").joinpath("static/demo_site.html").read_text()


def demo_page(app_id: int) -> str:
    return _page().replace("{{app}}", str(int(app_id)))


def no_app_page(message: str) -> str:
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>Demo site</title>'
        f"<p>{escape(message)}</p></html>"
    )
