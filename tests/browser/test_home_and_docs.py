"""The operator's first pages in Chromium: the landing page, and the API docs rendering with
every request outside the site refused (Swagger UI comes from a pinned package, not a CDN)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.browser.conftest import refuse_other_hosts

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _sign_in(page, live_server, client, user) -> None:
    client.force_login(user)
    host = urlparse(live_server.url).hostname
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "domain": host, "path": "/"}])


def test_api_docs_render_offline(live_server, page, client, django_user_model):
    staff = django_user_model.objects.create_user("op", password="pw-123456789", is_staff=True)
    _sign_in(page, live_server, client, staff)
    refused = refuse_other_hosts(page, live_server.url)
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)  # operations are listed
    assert page.locator(".swagger-ui .opblock").count() > 10
    assert refused == []  # nothing was asked of another host


def test_landing_page_signed_out_and_in(live_server, page, client, django_user_model):
    page.goto(f"{live_server.url}/")
    assert page.get_by_role("link", name="Sign in").get_attribute("href") == "/admin/login/?next=/"
    staff = django_user_model.objects.create_user("op2", password="pw-123456789", is_staff=True)
    _sign_in(page, live_server, client, staff)
    page.goto(f"{live_server.url}/")
    assert page.get_by_role("link", name="Admin").is_visible()
    assert page.get_by_role("link", name="API docs").get_attribute("href") == "/api/docs/"
