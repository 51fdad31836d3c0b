"""The operator dashboard in real Chromium: sign in through the admin's login form, open
the overview, a round, a job and a campaign; the plots (inline SVG) and the face images
(through the staff-only image view) are there and load, live updates fill the queue panel,
and nothing is asked of another host. Screenshots go to tests/browser/screenshots/
(git-ignored)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.browser.conftest import refuse_other_hosts
from tests.conftest import staff_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True),
              pytest.mark.rating_paths()]  # no rater endpoints here: one run

SHOTS = Path(__file__).resolve().parent / "screenshots"


def images_loaded(page, selector: str) -> int:
    """How many images matching ``selector`` have loaded (decoded, non-zero width)."""
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector)
    return page.evaluate(
        "s => [...document.querySelectorAll(s)].filter(i => i.naturalWidth > 0).length",
        selector)


def test_operator_follows_a_round_in_the_dashboard(live_server, page, django_user_model):
    from deidplatform.permissions import OPERATOR
    from tests.dashboard.data import build_world

    world = build_world()
    user = staff_user(django_user_model, "dash-op", OPERATOR)
    user.set_password("pw-dashboard-1")
    user.save()
    SHOTS.mkdir(exist_ok=True)
    refused = refuse_other_hosts(page, live_server.url)

    # Signed out, the dashboard sends to the sign-in form, and back after it.
    page.goto(f"{live_server.url}/dashboard/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "dash-op")
    page.fill("#id_password", "pw-dashboard-1")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboard/")

    # Overview: the running round's stage, the campaign, the success plot, and the queue
    # panel filled in by the live endpoint (a number, or "unknown" without a worker).
    assert page.locator(f'[data-live="round-{world.running.pk}-stage"]').inner_text() == "judgments"
    assert page.locator("#campaigns").get_by_role("link", name=world.campaign.name).is_visible()
    assert page.locator('#success svg.plot').count() == 1
    page.wait_for_function(
        "() => document.querySelector('[data-live=\"queue-gpu-depth\"]').textContent !== '…'")
    assert page.locator('[data-live="workers-alive"]').inner_text() != "…"
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    # A round page, reached by its link from the overview's success plot caption.
    page.locator("#success a").click()
    page.wait_for_url(f"**/dashboard/rounds/{world.round.pk}/")
    assert page.locator('#report svg.plot[aria-label="round report"]').count() == 1
    assert "Simulated crowd" in page.inner_text("#report")
    page.screenshot(path=str(SHOTS / "round.png"), full_page=True)

    # Its jobs, then one job: the score plot and its images side by side, all loaded.
    page.locator("#state").get_by_role("link", name="list").click()
    page.wait_for_url("**/dashboard/jobs/?round=*")
    assert page.locator("#jobs tr").count() == 1 + len(world.jobs)
    job = world.jobs[0]
    page.goto(f"{live_server.url}/dashboard/jobs/{job.pk}/")
    assert page.locator('#scores svg.plot').count() == 1
    assert page.locator('#loss svg.plot').count() == 1
    assert images_loaded(page, "#images img") == 3  # source, output, one ladder rung
    assert page.inner_text("#stop-reason") == "success"
    page.screenshot(path=str(SHOTS / "job.png"), full_page=True)

    # The campaign page: progress and label plots, α, the rater table with its actions.
    page.goto(f"{live_server.url}/dashboard/campaigns/{world.campaign.pk}/")
    assert page.locator("svg.plot").count() == 2
    assert page.inner_text("#alpha") == "0.420"
    assert page.locator("#raters tr").count() == 1 + len(world.raters)
    page.screenshot(path=str(SHOTS / "campaign.png"), full_page=True)

    # Block a rater from the table (a confirmation dialog, then the POST with its CSRF).
    page.once("dialog", lambda d: d.accept())
    page.locator("#raters button", has_text="Block").first.click()
    page.wait_for_selector("#raters button:has-text('Unblock')")
    from deidplatform.dashboard.models import AuditLog

    assert AuditLog.objects.filter(action="block", actor_name="dash-op").count() == 1

    # The gallery of the round's jobs: every source and output image loads.
    page.goto(f"{live_server.url}/dashboard/jobs/gallery/?round={world.round.pk}")
    assert images_loaded(page, ".gallery img") == 2 * len(world.jobs)
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)
    assert refused == []  # no CDN, nothing from another host
    for name in ("overview", "round", "job", "campaign", "gallery"):
        assert (SHOTS / f"{name}.png").stat().st_size > 5000


def test_images_refuse_a_rater_in_the_browser(live_server, page, django_user_model):
    from tests.dashboard.data import build_world

    world = build_world(n_jobs=1, n_raters=1)
    rater = django_user_model.objects.create_user("a-rater", password="pw-rater-123456")
    client_cookie = _session_cookie(live_server, rater)
    page.context.add_cookies([client_cookie])
    response = page.goto(
        f"{live_server.url}/dashboard/img/{world.jobs[0].source_id}/image")
    assert response.status == 403
    response = page.goto(f"{live_server.url}/dashboard/")
    assert response.status == 403


def _session_cookie(live_server, user) -> dict:
    from django.test import Client

    c = Client()
    c.force_login(user)
    return {"name": "sessionid", "value": c.cookies["sessionid"].value,
            "domain": urlparse(live_server.url).hostname, "path": "/"}
