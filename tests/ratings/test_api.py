"""Rater and staff API: permissions, idempotency, signed image URLs, nothing identifying."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client, override_settings

from ratings.models import Assignment, Campaign, Judgment, Rater

from .factories import add_pairs, make_campaign, make_images

pytestmark = pytest.mark.django_db


def csrf(client: Client) -> str:
    return client.cookies["csrftoken"].value


def open_page(client: Client, campaign: Campaign) -> str:
    r = client.get(f"/rate/{campaign.slug}/")
    assert r.status_code == 200
    return r.content.decode()


def post(client: Client, url: str, body: dict | None = None, token: bool = True):
    headers = {"HTTP_X_CSRFTOKEN": csrf(client)} if token else {}
    return client.post(url, data=json.dumps(body or {}), content_type="application/json",
                       **headers)


def next_(client, campaign):
    return post(client, f"/api/ratings/rate/{campaign.slug}/next")


def submit(client, campaign, assignment_id, **body):
    payload = {"same": True, "confidence": 3, "response_ms": 1500, **body}
    return post(client, f"/api/ratings/rate/{campaign.slug}/assignments/{assignment_id}/judgment",
                payload)


@pytest.fixture
def setup(rater_client):
    campaign = make_campaign(judgments_per_pair=2)
    imgs = make_images(6)
    add_pairs(campaign, 4, images=imgs)
    alice = rater_client(campaign, "ALICE")
    bob = rater_client(campaign, "BOB")
    open_page(alice, campaign)
    open_page(bob, campaign)
    return campaign, imgs, alice, bob


def test_entry_creates_rater_and_strips_ids_from_url(rater_client):
    campaign = make_campaign()
    client = Client()
    r = client.get(f"/rate/{campaign.slug}/?PROLIFIC_PID=P123&STUDY_ID=S9&SESSION_ID=X1")
    assert r.status_code == 302 and r["Location"] == f"/rate/{campaign.slug}/"
    rater = Rater.objects.get(external_id="P123")
    assert rater.source == "prolific" and rater.external_meta == {"STUDY_ID": "S9", "SESSION_ID": "X1"}
    client.get(f"/rate/{campaign.slug}/?PROLIFIC_PID=P123")  # resumes, no second rater
    assert Rater.objects.filter(campaign=campaign).count() == 1
    mturk = Client()
    mturk.get(f"/rate/{campaign.slug}/?workerId=W1&assignmentId=A1&hitId=H1")
    assert Rater.objects.get(external_id="W1").source == "mturk"
    assert Client().get(f"/rate/{campaign.slug}/?PROLIFIC_PID=bad<id>").status_code == 302
    assert not Rater.objects.filter(external_id__contains="<").exists()
    assert Client().get(f"/rate/{campaign.slug}/").status_code == 403  # no identity at all


def test_next_and_submit_happy_path_and_idempotent_retry(setup):
    campaign, imgs, alice, _ = setup
    r = next_(alice, campaign)
    assert r.status_code == 200, r.content
    data = r.json()
    assert data["status"] == "ok" and len(data["assignments"]) == 2
    a = data["assignments"][0]
    r1 = submit(alice, campaign, a["id"])
    assert r1.status_code == 201 and r1.json()["status"] == "recorded"
    r2 = submit(alice, campaign, a["id"])  # the retried POST
    assert r2.status_code == 200 and r2.json()["status"] == "duplicate"
    assert Judgment.objects.count() == 1
    r3 = submit(alice, campaign, a["id"], same=False)
    assert r3.status_code == 409 and r3.json()["errors"][0]["code"] == "already_judged"
    assert Judgment.objects.count() == 1


def test_someone_elses_assignment_is_refused(setup):
    campaign, _, alice, bob = setup
    a = next_(alice, campaign).json()["assignments"][0]
    r = submit(bob, campaign, a["id"])
    assert r.status_code == 404
    assert r.json()["errors"][0] == {"field": "assignment", "code": "not_found",
                                     "detail": "No such assignment."}
    assert not Judgment.objects.exists()


def test_expired_assignment_is_refused(setup):
    campaign, _, alice, _ = setup
    a = next_(alice, campaign).json()["assignments"][0]
    Assignment.objects.filter(public_id=a["id"]).update(
        expires=Assignment.objects.get(public_id=a["id"]).issued)
    r = submit(alice, campaign, a["id"])
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "expired"
    assert Assignment.objects.get(public_id=a["id"]).state == "expired"


def test_csrf_is_enforced_for_external_raters(setup):
    campaign, _, alice, _ = setup
    r = post(alice, f"/api/ratings/rate/{campaign.slug}/next", token=False)
    assert r.status_code == 403
    assert "CSRF" in r.json()["errors"][0]["detail"]


def test_bad_payloads_are_4xx_json(setup):
    campaign, _, alice, _ = setup
    a = next_(alice, campaign).json()["assignments"][0]
    r = submit(alice, campaign, a["id"], confidence=7)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "confidence"
    r = post(alice, f"/api/ratings/rate/{campaign.slug}/assignments/not-a-uuid/judgment", {})
    assert r.status_code == 404
    assert post(Client(enforce_csrf_checks=False), f"/api/ratings/rate/{campaign.slug}/next",
                token=False).status_code == 403


def test_rater_json_and_html_carry_nothing_identifying(setup):
    campaign, imgs, alice, _ = setup
    html = open_page(alice, campaign)
    body = next_(alice, campaign).content.decode()
    a = json.loads(body)["assignments"][0]
    img = alice.get(a["left_url"])
    for text in (html, body, a["left_url"], img["Content-Disposition"]):
        for image in imgs:
            assert str(image.pk) not in text and image.pk.hex not in text
            assert image.sha256 not in text and image.file.name not in text
        assert "ALICE" not in text and "score" not in text
    for field in ("pair", "kind", "subject", "job", "expected_same", "image_a"):
        assert field not in json.loads(body)["assignments"][0]


def test_signed_image_urls(setup):
    campaign, imgs, alice, bob = setup
    a = next_(alice, campaign).json()["assignments"][0]
    r = alice.get(a["left_url"])
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert r["Cache-Control"].startswith("private")
    assert bob.get(a["left_url"]).status_code == 404  # bound to the rater
    assert Client().get(a["left_url"]).status_code == 404  # no session
    assert alice.get(a["left_url"][:-3] + "abc").status_code == 404  # tampered
    with override_settings(RATINGS_IMAGE_URL_MAX_AGE=0):
        time.sleep(1.1)
        assert alice.get(a["left_url"]).status_code == 404  # expired
    assert submit(alice, campaign, a["id"]).status_code == 201
    assert alice.get(a["right_url"]).status_code == 404  # the hold is closed
    # Staff-only image view still refuses raters.
    assert alice.get(f"/faces/{imgs[0].pk}/image").status_code == 404


def test_blocked_rater_is_refused_and_sees_polite_page(setup):
    campaign, _, alice, _ = setup
    a = next_(alice, campaign).json()["assignments"][0]
    Rater.objects.filter(external_id="ALICE").update(blocked=True, blocked_reason="attention")
    r = next_(alice, campaign)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "blocked"
    assert submit(alice, campaign, a["id"]).status_code == 403
    page = alice.get(f"/rate/{campaign.slug}/")
    assert page.status_code == 200 and b'id="blocked"' in page.content


def test_staff_endpoints_refuse_raters_and_anonymous(setup):
    campaign, imgs, alice, _ = setup
    for url in ("/api/ratings/campaigns/", f"/api/ratings/campaigns/{campaign.pk}/labels/",
                f"/api/ratings/campaigns/{campaign.pk}/exports/judgments/csv/"):
        assert alice.get(url).status_code == 403
        assert Client().get(url).status_code == 403
    assert post(alice, f"/api/ratings/campaigns/{campaign.pk}/pairs/",
                {"pairs": [{"image_a": str(imgs[0].pk), "image_b": str(imgs[1].pk)}]}
                ).status_code == 403


def test_staff_creates_campaign_and_pairs_in_bulk(staff_client):
    body = {"name": "Study 1", "slug": "study-1", "status": "active", "judgments_per_pair": 3,
            "gold_rate": 0.1, "attention_rate": 0.05}
    # An active campaign must tell raters what to do and ask their consent.
    r = staff_client.post("/api/ratings/campaigns/", body, content_type="application/json")
    assert r.status_code == 400
    assert {e["field"] for e in r.json()["errors"]} == {"instructions", "consent_text"}
    r = staff_client.post("/api/ratings/campaigns/", {**body, "instructions": "Same person?",
                                                      "consent_text": "I agree."},
                          content_type="application/json")
    assert r.status_code == 201, r.content
    cid = r.json()["id"]
    assert r.json()["rater_url"] == "/rate/study-1/"
    imgs = make_images(3)
    pairs = [
        {"image_a": str(imgs[0].pk), "image_b": str(imgs[1].pk)},
        {"image_a": str(imgs[0].pk), "image_b": str(imgs[2].pk), "kind": "gold_same"},
        {"image_a": str(imgs[1].pk), "image_b": str(imgs[1].pk), "kind": "attention"},
    ]
    r = staff_client.post(f"/api/ratings/campaigns/{cid}/pairs/", {"pairs": pairs},
                          content_type="application/json")
    assert r.status_code == 201, r.content
    assert [p["expected_same"] for p in r.json()] == [None, True, True]
    bad = staff_client.post(f"/api/ratings/campaigns/{cid}/pairs/", {"pairs": [
        {"image_a": str(imgs[0].pk), "image_b": "00000000-0000-0000-0000-000000000001"}]},
        content_type="application/json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "pairs"
    same = staff_client.post(f"/api/ratings/campaigns/{cid}/pairs/", {"pairs": [
        {"image_a": str(imgs[0].pk), "image_b": str(imgs[0].pk)}]}, content_type="application/json")
    assert same.status_code == 400
    rates = staff_client.patch(f"/api/ratings/campaigns/{cid}/", {"gold_rate": 0.99},
                               content_type="application/json")
    assert rates.status_code == 400


def test_local_user_rates_after_login(django_user_model):
    campaign = make_campaign(consent_text="You agree.")
    add_pairs(campaign, 2, images=make_images(4))
    user = django_user_model.objects.create_user("rater1", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(f"/rate/{campaign.slug}/")
    assert b"You agree." in page.content and b'id="agree"' in page.content
    r = post(client, f"/api/ratings/rate/{campaign.slug}/next")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "consent_required"
    r = client.post(f"/rate/{campaign.slug}/consent",
                    {"csrfmiddlewaretoken": csrf(client)})
    assert r.status_code == 302
    assert next_(client, campaign).json()["status"] == "ok"
    assert Rater.objects.get(user=user).source == "local"


def test_no_work_and_done_pages(rater_client):
    empty = make_campaign()
    client = rater_client(empty, "EMPTY1")
    open_page(client, empty)
    assert next_(client, empty).json()["status"] == "no_work"
    page = client.get(f"/rate/{empty.slug}/done")
    assert page.status_code == 200 and b'id="no-work"' in page.content
    finished = make_campaign(rater_quota=1, completion_url="https://example.org/complete?cc=X")
    add_pairs(finished, 2, images=make_images(4))
    client = rater_client(finished, "QUOTA1")
    open_page(client, finished)
    a = next_(client, finished).json()["assignments"][0]
    out = submit(client, finished, a["id"]).json()
    assert out["next"]["status"] == "finished"
    page = client.get(f"/rate/{finished.slug}/done")
    assert finished.completion_code.encode() in page.content
    assert b"https://example.org/complete?cc=X" in page.content
    draft = make_campaign(status="draft")
    assert Client().get(f"/rate/{draft.slug}/?PROLIFIC_PID=X1").status_code == 404


@pytest.mark.django_db
def test_admin_form_refuses_an_active_campaign_without_texts(admin_client):
    r = admin_client.post("/admin/ratings/campaign/add/", {
        "name": "S", "slug": "s-admin", "status": "active", "instructions": " ",
        "consent_text": "", "judgments_per_pair": 3, "gold_rate": 0, "attention_rate": 0,
        "qualification_size": 0, "pass_mark": 0.8, "attention_failures_allowed": 1,
        "min_response_ms": 0, "hold_timeout_s": 600, "rater_quota": 0,
    })
    assert r.status_code == 200  # the form again, with the errors
    errors = r.context["adminform"].form.errors
    assert set(errors) >= {"instructions", "consent_text"}
    from ratings.models import Campaign

    assert not Campaign.objects.filter(slug="s-admin").exists()


def test_all_done_is_final_with_the_same_code(rater_client):
    """After the completion code, new work in the campaign is not served to that rater: the
    link and the next call both say "finished", and the page shows the same code."""
    campaign = make_campaign(judgments_per_pair=1, rater_quota=1)
    imgs = make_images(4)
    add_pairs(campaign, 1, images=imgs)
    alice = rater_client(campaign, "DONE1")
    open_page(alice, campaign)
    a = next_(alice, campaign).json()["assignments"][0]
    assert submit(alice, campaign, a["id"]).status_code == 201
    assert next_(alice, campaign).json()["status"] == "finished"
    done = alice.get(f"/rate/{campaign.slug}/done")
    assert done.status_code == 200 and campaign.completion_code in done.content.decode()
    # More work arrives, and the quota is lifted: a finished participant still is done.
    Campaign.objects.filter(pk=campaign.pk).update(rater_quota=0)
    add_pairs(campaign, 2, images=imgs)
    again = alice.get(f"/rate/{campaign.slug}/")
    assert again.status_code == 200 and campaign.completion_code in again.content.decode()
    assert 'id="rater"' not in again.content.decode()  # no rating page
    assert next_(alice, campaign).json()["status"] == "finished"
    assert alice.get(f"/rate/{campaign.slug}/done").content.decode().count(
        campaign.completion_code) == 1
