"""Staff only on every page, JSON endpoint and image; every action (promote, roll back,
block, unblock, start a round, cancel a job) does what it says, needs CSRF and the
operator's permission, and leaves an audit row without biometric data."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from deidplatform.dashboard.models import AuditLog
from models_app.faces.models import Subject
from models_app.jobs.models import DeidJob
from models_app.rounds.models import Round
from models_app.training.models import ModelVersion
from ratings.models import Rater
from tests.conftest import staff_user
from tests.ratings.factories import make_face

pytestmark = pytest.mark.django_db


def page_urls(world) -> list[str]:
    job = world.jobs[0]
    return [
        reverse("dashboard:overview"), reverse("dashboard:live-overview"),
        reverse("dashboard:live-celery"),
        reverse("dashboard:round", args=[world.round.pk]),
        reverse("dashboard:live-round", args=[world.round.pk]),
        reverse("dashboard:jobs"), reverse("dashboard:gallery"),
        reverse("dashboard:job", args=[job.pk]),
        reverse("dashboard:campaign", args=[world.campaign.pk]),
        reverse("dashboard:proxy"),
        reverse("dashboard:image", args=[job.source_id, "image"]),
        reverse("dashboard:image", args=[job.output_id, "chip"]),
    ]


def action_urls(world) -> list[str]:
    c, r = world.campaign.pk, world.raters[0].pk
    return [
        reverse("dashboard:promote", args=[world.versions[0].pk]),
        reverse("dashboard:rollback"),
        reverse("dashboard:block-rater", args=[c, r]),
        reverse("dashboard:unblock-rater", args=[c, r]),
        reverse("dashboard:start-round"),
        reverse("dashboard:cancel-job", args=[world.jobs[0].pk]),
    ]


def test_anonymous_is_sent_to_sign_in_everywhere(client, world):
    for url in page_urls(world) + action_urls(world):
        for method in (client.get, client.post):
            r = method(url)
            if r.status_code == 405:  # GET on a POST-only action
                continue
            assert r.status_code == 302, url
            assert r["Location"].startswith("/admin/login/?next="), url
    assert not AuditLog.objects.exists()


def test_raters_and_staff_without_a_role_get_403(client, django_user_model, world):
    rater = django_user_model.objects.create_user("rater", password="pw")
    Rater.objects.create(campaign=world.campaign, user=rater)
    bare_staff = staff_user(django_user_model, "bare", None)
    for user in (rater, bare_staff):
        client.force_login(user)
        for url in page_urls(world):
            assert client.get(url).status_code == 403, (user.username, url)
        for url in action_urls(world):
            assert client.post(url).status_code == 403, (user.username, url)
    assert not AuditLog.objects.exists()
    assert ModelVersion.objects.get(status="promoted") == world.versions[1]


def test_viewers_read_every_page_but_take_no_action(viewer_client, world):
    for url in page_urls(world):
        assert viewer_client.get(url).status_code == 200, url
    for url in action_urls(world):
        assert viewer_client.post(url).status_code == 403, url
    assert not AuditLog.objects.exists()


def test_image_ids_that_do_not_exist_or_bad_variants_are_404(staff_client, world):
    import uuid

    assert staff_client.get(reverse("dashboard:image", args=[uuid.uuid4(), "image"])).status_code == 404
    assert staff_client.get(
        reverse("dashboard:image", args=[world.jobs[0].source_id, "raw"])).status_code == 404


def test_actions_need_csrf(django_user_model, world):
    from deidplatform.permissions import OPERATOR

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user(django_user_model, "op-csrf", OPERATOR))
    for url in action_urls(world):
        assert client.post(url).status_code == 403, url
    assert not AuditLog.objects.exists()
    # With the token from the confirmation page, the same POST goes through.
    page = client.get(reverse("dashboard:rollback"))
    token = page.cookies["csrftoken"].value
    r = client.post(reverse("dashboard:rollback"), {"csrfmiddlewaretoken": token})
    assert r.status_code == 302
    assert AuditLog.objects.get().action == "rollback"


def _audit(action: str) -> AuditLog:
    return AuditLog.objects.get(action=action)


def test_promote_with_confirmation_and_audit(staff_client, world, django_capture_on_commit_callbacks):
    v1 = world.versions[0]
    url = reverse("dashboard:promote", args=[v1.pk])
    confirm = staff_client.get(url).content.decode()
    assert "Confirm: promote v1" in confirm
    assert ModelVersion.objects.get(pk=v1.pk).status == "retired"  # GET changes nothing
    with django_capture_on_commit_callbacks(execute=False):
        r = staff_client.post(url)
    assert r.status_code == 302
    assert ModelVersion.objects.get(pk=v1.pk).status == "promoted"
    assert ModelVersion.objects.get(pk=world.versions[1].pk).status == "retired"
    row = _audit("promote")
    assert row.actor_name == "operator" and row.target_type == "model_version"
    assert row.target_id == str(v1.pk) and row.detail == {
        "number": 1, "kind": "human_proxy", "previous": 2, "force": False}


def test_a_rejected_version_needs_force(staff_client, world, django_capture_on_commit_callbacks):
    v3 = world.versions[2]
    url = reverse("dashboard:promote", args=[v3.pk])
    assert "promote anyway" in staff_client.get(url).content.decode()
    r = staff_client.post(url, follow=True)
    assert "Refused" in r.content.decode() and "failed its promotion gate" in r.content.decode()
    assert ModelVersion.objects.get(pk=v3.pk).status == "rejected"
    assert not AuditLog.objects.exists()  # nothing changed, nothing audited
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(url, {"force": "on"})
    assert ModelVersion.objects.get(pk=v3.pk).status == "promoted"
    assert _audit("promote").detail["force"] is True


def test_rollback_puts_back_the_previous_version(staff_client, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("dashboard:rollback"))
    assert ModelVersion.objects.get(status="promoted") == world.versions[0]
    row = _audit("rollback")
    assert row.detail["number"] == 1 and row.detail["previous"] == 2
    # With nothing promoted there is nothing to roll back: refused, not audited.
    ModelVersion.objects.update(status=ModelVersion.Status.RETIRED)
    r = staff_client.post(reverse("dashboard:rollback"), follow=True)
    assert "Refused" in r.content.decode()
    assert AuditLog.objects.filter(action="rollback").count() == 1


def test_block_and_unblock_a_rater(staff_client, world, django_capture_on_commit_callbacks):
    rater = world.raters[0]
    c = world.campaign.pk
    with django_capture_on_commit_callbacks(execute=False):
        r = staff_client.post(reverse("dashboard:block-rater", args=[c, rater.pk]))
    assert r.status_code == 302 and r["Location"].endswith("#raters")
    rater.refresh_from_db()
    assert rater.blocked and rater.blocked_reason == "operator"
    html = staff_client.get(reverse("dashboard:campaign", args=[c])).content.decode()
    assert reverse("dashboard:unblock-rater", args=[c, rater.pk]) in html
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("dashboard:unblock-rater", args=[c, rater.pk]))
    rater.refresh_from_db()
    assert not rater.blocked
    rows = list(AuditLog.objects.order_by("id").values_list("action", "target_type", "target_id",
                                                            "detail"))
    assert rows == [("block", "rater", str(rater.pk), {"campaign": c}),
                    ("unblock", "rater", str(rater.pk), {"campaign": c})]
    # A rater of another campaign is not reachable through this campaign's URL.
    assert staff_client.post(
        reverse("dashboard:block-rater", args=[c + 999, rater.pk])).status_code == 404


def test_start_a_round(staff_client, world, django_capture_on_commit_callbacks):
    for i in range(3):
        subject = Subject.objects.create(label=f"dash-subject-{i}")
        face = make_face(50 + i)
        face.subject = subject
        face.save(update_fields=["subject"])
    r = staff_client.post(reverse("dashboard:start-round"),
                          {"series": "from-dashboard", "faces": "2", "config": ""})
    rnd = Round.objects.get(series="from-dashboard")
    assert r.status_code == 302 and r["Location"] == reverse("dashboard:round", args=[rnd.pk])
    assert rnd.faces.count() == 2 and rnd.stage == "jobs" and rnd.status == "running"
    row = _audit("start_round")
    assert row.target_id == str(rnd.pk) and row.detail == {
        "series": "from-dashboard", "number": 0, "faces": 2}
    # Refused settings name the field; nothing stored, nothing audited.
    r = staff_client.post(reverse("dashboard:start-round"),
                          {"series": "bad", "config": '{"sampling": "psychic"}'}, follow=True)
    assert "Refused" in r.content.decode()
    assert not Round.objects.filter(series="bad").exists()
    assert AuditLog.objects.filter(action="start_round").count() == 1


def test_cancel_a_job(staff_client, world):
    job = world.jobs[0]
    DeidJob.objects.filter(pk=job.pk).update(status=DeidJob.Status.RUNNING)
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert "Cancel the job" in html
    staff_client.post(reverse("dashboard:cancel-job", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled" and job.stop_reason == "cancelled"
    assert _audit("cancel_job").target_id == str(job.pk)
    # A finished job does not cancel: refused, not audited again.
    r = staff_client.post(reverse("dashboard:cancel-job", args=[job.pk]), follow=True)
    assert "Refused" in r.content.decode()
    assert AuditLog.objects.filter(action="cancel_job").count() == 1


def test_audit_rows_show_on_the_overview(staff_client, world, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(reverse("dashboard:rollback"))
    html = staff_client.get(reverse("dashboard:overview")).content.decode()
    assert "roll back the proxy" in html and "operator" in html
