"""Every dashboard page renders with real rows made by the factories, and shows what it is
for: stages, progress, plots (inline SVG), images by opaque id, the rater table."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from models_app.jobs.models import DeidJob
from models_app.training.models import ModelVersion

pytestmark = pytest.mark.django_db


def svg_count(html: str) -> int:
    return len(re.findall(r'<svg class="plot"', html))


def test_overview_shows_rounds_campaigns_proxy_and_success_plot(staff_client, world):
    r = staff_client.get(reverse("dashboard:overview"))
    assert r.status_code == 200
    html = r.content.decode()
    # The running round with its stage, linked.
    assert reverse("dashboard:round", args=[world.running.pk]) in html
    assert "judgments" in html
    # The live campaign with its progress: 3 deid pairs, 4 raters each judged all, k = 2, but
    # the simulated rater counts too here (good standing): 3 pairs done, 6 of 6 counted.
    c = world.campaign.pk
    assert f'data-live="campaign-{c}-pairs_done">3<' in html
    assert f'data-live="campaign-{c}-counted">6<' in html
    # The promoted proxy (v2) with its metrics and battery.
    assert "v2" in html and "0.720" in html and "passed" in html
    assert svg_count(html) >= 1  # the success-rate plot
    assert 'aria-label="round success rates"' in html


def test_live_overview_json_updates_stage_and_counts(staff_client, world):
    data = staff_client.get(reverse("dashboard:live-overview")).json()
    assert data[f"round-{world.running.pk}-stage"] == "judgments"
    assert data[f"jobs-{DeidJob.Status.SUCCEEDED}"] == "3"
    assert data[f"campaign-{world.campaign.pk}-pairs"] == "3"


def test_round_page_has_report_plot_stage_times_and_links(staff_client, world):
    rnd = world.round
    html = staff_client.get(reverse("dashboard:round", args=[rnd.pk])).content.decode()
    assert 'aria-label="round report"' in html
    assert "50 %" in html  # success rate
    assert "ceiling (gold different)" in html and "62 %" in html  # beside what bounds it
    assert "Simulated crowd" in html  # a simulation's figures are labelled as such
    assert f"{reverse('dashboard:jobs')}?round={rnd.pk}" in html
    assert reverse("dashboard:campaign", args=[world.campaign.pk]) in html
    assert f"?version={rnd.model_version_id}" in html
    assert reverse("admin:models_app_trainingrun_change", args=[rnd.training_run_id]) in html
    assert "6.5 s" in html  # the report stage's time (1.5 + 5)


def test_job_page_plots_scores_with_thresholds_and_shows_images(staff_client, world):
    job = world.jobs[0]
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'aria-label="score-A and score-B per iteration"' in html
    assert "τA = 0.3" in html and "τB = 0.5" in html
    assert 'aria-label="loss terms per iteration"' in html and "identity" in html
    assert "success" in html  # stop reason
    for image_id in (job.source_id, job.output_id, job.ladder[0]["image"]):
        assert reverse("dashboard:image", args=[image_id, "image"]) in html
    # The images themselves come back to staff.
    r = staff_client.get(reverse("dashboard:image", args=[job.output_id, "image"]))
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert r["Cache-Control"] == "private, no-store"
    assert b"".join(r.streaming_content)[:4] == b"\x89PNG"


def test_job_list_filters_and_paginates(staff_client, world, settings):
    from deidplatform.dashboard import views

    world.jobs[1].status = DeidJob.Status.FAILED
    world.jobs[1].stop_reason = "max_iterations"
    world.jobs[1].save()
    url = reverse("dashboard:jobs")
    html = staff_client.get(url, {"status": "failed"}).content.decode()
    assert str(world.jobs[1].pk)[:8] in html and str(world.jobs[0].pk)[:8] not in html
    html = staff_client.get(url, {"stop_reason": "success"}).content.decode()
    assert str(world.jobs[0].pk)[:8] in html and str(world.jobs[1].pk)[:8] not in html
    html = staff_client.get(url, {"round": str(world.round.pk)}).content.decode()
    assert "3 in all" in html
    html = staff_client.get(url, {"round": "not-a-uuid"}).content.decode()  # ignored, no 500
    assert "3 in all" in html
    views_page = views.PAGE_SIZE
    try:
        views.PAGE_SIZE = 2
        html = staff_client.get(url, {"page": 2}).content.decode()
        assert "page 2 of 2" in html
    finally:
        views.PAGE_SIZE = views_page


def test_gallery_shows_source_and_output_of_a_round(staff_client, world):
    html = staff_client.get(reverse("dashboard:gallery"), {"round": world.round.pk}).content.decode()
    for job in world.jobs:
        assert reverse("dashboard:image", args=[job.source_id, "image"]) in html
        assert reverse("dashboard:image", args=[job.output_id, "image"]) in html


def test_campaign_page_rater_table_alpha_labels_and_simulated_share(staff_client, world):
    c = world.campaign
    html = staff_client.get(reverse("dashboard:campaign", args=[c.pk])).content.decode()
    assert 'id="alpha">0.420<' in html
    assert 'aria-label="judgments over time"' in html
    assert 'aria-label="label distribution"' in html
    assert 'id="simulated-share">25 %<' in html  # 1 of 4 raters, all judged every pair
    for rater in world.raters:
        assert reverse("dashboard:block-rater", args=[c.pk, rater.pk]) in html
    assert "50 %" in html  # gold accuracy 1/2
    # median response times: pairs' ms = 800 + 100 * (pair_id % 7)
    assert " ms<" in html
    assert f"/api/ratings/campaigns/{c.pk}/exports/judgments/csv/" in html


def test_proxy_page_versions_curves_schedule(staff_client, world):
    html = staff_client.get(reverse("dashboard:proxy")).content.decode()
    for v in world.versions:
        assert f"v{v.number}" in html
    assert 'aria-label="training curves"' in html
    assert reverse("dashboard:promote", args=[world.versions[0].pk]) in html
    assert reverse("dashboard:rollback") in html
    # The migrations' retraining schedules, with a next run.
    assert "human proxy: retrain after N new labels" in html
    assert "weekly retraining" in html and "(in " in html


def test_proxy_page_picks_a_version_to_compare(staff_client, world):
    v3 = world.versions[2]
    html = staff_client.get(reverse("dashboard:proxy"), {"version": v3.pk}).content.decode()
    assert "v3 (rejected)" in html and "v2 (promoted)" in html


def test_selectors_median_matches_python(world):
    import statistics

    from deidplatform.dashboard.selectors import median_response_ms
    from ratings.models import Judgment

    rater = world.raters[0]
    times = list(Judgment.objects.filter(rater=rater).values_list("response_ms", flat=True))
    assert median_response_ms([rater.pk])[rater.pk] == pytest.approx(statistics.median(times))


def test_retraining_next_run_is_in_the_future(world):
    from django.utils import timezone

    from deidplatform.dashboard.selectors import retraining_schedule

    rows = retraining_schedule()
    assert len(rows) == 2
    assert all(r["next_run"] is not None and r["next_run"] >= timezone.now() - timezone.timedelta(seconds=1)
               for r in rows)


def test_live_round_json_and_forms_render(staff_client, world):
    data = staff_client.get(reverse("dashboard:live-round", args=[world.round.pk])).json()
    assert data["round-stage"] == "done" and data["round-jobs-succeeded"] == "3"
    assert data[f"campaign-{world.campaign.pk}-counted"] == "6"
    html = staff_client.get(reverse("dashboard:start-round")).content.decode()
    assert 'name="faces"' in html and "csrfmiddlewaretoken" in html
    for url in (reverse("dashboard:overview"), reverse("dashboard:rollback"),
                reverse("dashboard:promote", args=[world.versions[0].pk])):
        html = staff_client.get(url).content.decode()
        assert "{#" not in html and "{%" not in html  # no template source leaks to the page


def test_proxy_page_shows_the_gates_interval_rule(staff_client, world):
    v3 = world.versions[2]
    ModelVersion.objects.filter(pk=v3.pk).update(gate={
        "passed": True, "reasons": [], "rule": "interval",
        "intervals": {"auc": [-0.31, 0.12], "brier": [-0.05, 0.08]},
    })
    html = staff_client.get(reverse("dashboard:proxy"), {"version": v3.pk}).content.decode()
    assert "interval rule" in html
    assert "AUC -0.310 … 0.120" in html
    # A version gated by the point rule shows neither.
    ModelVersion.objects.filter(pk=v3.pk).update(gate={"passed": True, "reasons": []})
    html = staff_client.get(reverse("dashboard:proxy"), {"version": v3.pk}).content.decode()
    assert "interval rule" not in html and "95 % interval" not in html


def test_a_proxys_success_shows_its_basis_never_a_plain_succeeded(staff_client, world):
    """Issue 13: a success by a prior proxy says so on the job page, in the list and the
    gallery, with why the job stopped and its face colour; no page says "succeeded" alone."""
    job = world.jobs[0]
    job.final_detail = {
        "success_basis": "prior_proxy",
        "stop_detail": "both thresholds met, confirmed on the saved photo",
        "naturalness": {"a_mean": 30.2, "b_mean": 20.0, "l_spread": 12.0, "natural": False,
                        "outside": ["a_mean"]},
        "natural_kept": True,
    }
    job.save()
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert "thresholds met by a prior proxy" in html and "says little about people" in html
    assert "Why it stopped: both thresholds met, confirmed on the saved photo." in html
    assert "outside the natural range</strong> (a_mean)" in html and "a* 30.2" in html
    pages = [html,
             staff_client.get(reverse("dashboard:jobs")).content.decode(),
             staff_client.get(reverse("dashboard:gallery"), {"round": world.round.pk}).content.decode()]
    assert "met · prior proxy" in pages[1] and "met · prior proxy" in pages[2]
    for page in pages:  # the text people read (tags and attribute values stripped)
        text = re.sub(r"<[^>]+>", " ", page)
        assert not re.search(r"\bsucceeded\b", text, re.IGNORECASE), text[:2000]
    # The job counts on the overview and round pages label it the same way.
    for url in (reverse("dashboard:overview"), reverse("dashboard:round", args=[world.round.pk])):
        assert "thresholds met (by a proxy)" in staff_client.get(url).content.decode()
    # A success with no recorded basis (an older job) says that instead.
    job.final_detail = {}
    job.save()
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert "thresholds met (basis not recorded)" in html
