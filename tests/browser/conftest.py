"""Real Chromium through Playwright against pytest-django's live server."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlparse

import pytest

from tests.ratings.limits import fresh_rate_limits  # noqa: F401
from tests.ratings.paths import (  # noqa: F401 - both rating paths here too
    pytest_configure,
    pytest_generate_tests,
    rating_path,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# between page actions are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def refuse_other_hosts(page, site_url: str) -> list[str]:
    """Abort every request of ``page`` that leaves the site (a CDN, a font host); the list
    returned collects their URLs, so a test can assert it stays empty."""
    site = urlparse(site_url).netloc
    refused: list[str] = []

    def only_the_site(route):
        if urlparse(route.request.url).netloc == site:
            return route.continue_()
        refused.append(route.request.url)
        return route.abort()

    page.route("**/*", only_the_site)
    return refused
