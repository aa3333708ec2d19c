"""Everything the server serves works without the internet: each page is loaded with every
request to another host blocked, and none is even attempted. `/docs` must still list the
API's operations (its Swagger UI comes from the package, not from a CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.browser.conftest import WAIT_MS, LiveServer


@pytest.fixture
def offline_page(context: BrowserContext, live_server: LiveServer) -> tuple[Page, list[str]]:
    """A page whose requests to anywhere but the server are aborted, and the list of them."""
    ours = urlsplit(live_server.base_url).netloc
    outside: list[str] = []

    def only_ours(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == ours or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_ours)
    return context.new_page(), outside


def test_docs_list_the_operations_offline(
    offline_page: tuple[Page, list[str]], live_server: LiveServer
) -> None:
    page, outside = offline_page
    page.goto(f"{live_server.base_url}/docs")
    operations = page.locator(".opblock")
    # Swagger UI renders the whole document first: give a busy machine the usual wait.
    expect(operations.first).to_be_visible(timeout=WAIT_MS)
    assert operations.count() > 20
    # A vendor route and an extension route, by their paths as Swagger UI prints them.
    expect(page.locator('[data-path="/conversations/{id}/reply"]').first).to_be_visible()
    expect(page.locator('[data-path="/ext/apps/{app}/webhooks"]').first).to_be_visible()
    favicon = page.locator("link[rel~=icon]").first.get_attribute("href")
    assert favicon is not None
    assert favicon.startswith("/docs/assets/")
    assert outside == []


@pytest.mark.parametrize("path", ["/", "/demo/site", "/docs"])
def test_no_page_asks_another_host(
    offline_page: tuple[Page, list[str]], live_server: LiveServer, path: str
) -> None:
    page, outside = offline_page
    page.goto(f"{live_server.base_url}{path}")
    page.wait_for_load_state("networkidle")
    assert outside == []
