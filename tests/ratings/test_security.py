"""Hostile raters and clients (issue 12, defects 5 and 6): impersonation by a bare external
id, study/session ids, signed entry links, a blocked rater's fresh id, rate limits on rater
entry, next and submit (both rating paths), and the login lockout (admin and basic auth)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from ratings import services
from ratings.models import Campaign, Judgment, Rater

from .factories import add_pairs, make_campaign, make_images

pytestmark = pytest.mark.django_db


def entry(client: Client, campaign: Campaign, pid: str, **params: str):
    return client.get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": pid, "STUDY_ID": "S",
                                                  "SESSION_ID": "X", **params})


def post(client: Client, url: str, body: dict | None = None):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(url, data=json.dumps(body or {}), content_type="application/json",
                       HTTP_X_CSRFTOKEN=token)


def next_(client: Client, campaign: Campaign):
    return post(client, f"/api/ratings/rate/{campaign.slug}/next")


def submit(client: Client, campaign: Campaign, assignment_id: str):
    return post(client, f"/api/ratings/rate/{campaign.slug}/assignments/{assignment_id}/judgment",
                {"same": True, "confidence": 3, "response_ms": 1500})


def code(response) -> str:
    return response.json()["errors"][0]["code"]


def fresh_window() -> None:
    """Sleep to the start of the next 1 s rate-limit window (under a second)."""
    time.sleep(1.02 - time.time() % 1)


@pytest.fixture
def campaign(db) -> Campaign:
    campaign = make_campaign(judgments_per_pair=2)
    add_pairs(campaign, 6, images=make_images(6))
    return campaign


@pytest.fixture
def alice(campaign, rater_client) -> Client:
    client = rater_client(campaign, "ALICE")
    assert client.get(f"/rate/{campaign.slug}/").status_code == 200  # csrftoken
    return client


# --- Impersonation (defect 5) ------------------------------------------------------------


def test_second_browser_with_the_same_id_is_refused(campaign, alice):
    holds = next_(alice, campaign).json()["assignments"]
    assert len(holds) == 2

    other = Client(enforce_csrf_checks=True)
    r = entry(other, campaign, "ALICE")
    assert r.status_code == 403
    assert b'id="already-bound"' in r.content and b"ALICE" not in r.content
    assert Rater.objects.filter(campaign=campaign).count() == 1
    # It got no session as Alice: no page, no holds, no image, no submission.
    assert other.get(f"/rate/{campaign.slug}/").status_code == 403
    other.get(f"/rate/{campaign.slug}/")
    assert next_(other, campaign).status_code == 403
    assert other.get(holds[0]["left_url"]).status_code == 404
    assert submit(other, campaign, holds[0]["id"]).status_code == 403
    assert not Judgment.objects.exists()
    # Alice's own browser goes on (and may re-enter through her link).
    assert entry(alice, campaign, "ALICE").status_code == 302
    assert submit(alice, campaign, holds[0]["id"]).status_code == 201


def test_a_session_without_the_binding_cookie_cannot_act(campaign, alice, settings):
    """Alice's session cookie alone (copied, or a session from elsewhere) is not enough:
    the pages, the DRF views and the hot path all want the binding cookie too."""
    holds = next_(alice, campaign).json()["assignments"]
    thief = Client(enforce_csrf_checks=True)
    thief.cookies[settings.SESSION_COOKIE_NAME] = alice.cookies[settings.SESSION_COOKIE_NAME].value
    thief.cookies["csrftoken"] = alice.cookies["csrftoken"].value
    assert thief.get(f"/rate/{campaign.slug}/").status_code == 403
    r = next_(thief, campaign)
    assert r.status_code == 403 and code(r) == "not_this_browser"
    r = submit(thief, campaign, holds[0]["id"])
    assert r.status_code == 403 and code(r) == "not_this_browser"
    # A forged binding cookie does not pass either.
    thief.cookies[settings.RATINGS_BINDING_COOKIE] = "forged:abc:def"
    assert next_(thief, campaign).status_code == 403
    assert not Judgment.objects.exists()
    assert submit(alice, campaign, holds[0]["id"]).status_code == 201


@pytest.mark.rating_paths()
def test_binding_cookie_is_signed_and_httponly(campaign, settings):
    client = Client()
    r = entry(client, campaign, "BOB")
    cookie = r.cookies[settings.RATINGS_BINDING_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    rater = Rater.objects.get(external_id="BOB")
    assert len(rater.binding_hash) == 64 and rater.binding_hash not in cookie.value


@pytest.mark.rating_paths()
def test_unbound_rater_is_claimed_by_the_next_entry(campaign):
    """Raters from before binding existed are bound by their next entry."""
    services.get_or_create_rater(campaign, source="prolific", external_id="OLD")
    first, second = Client(), Client()
    assert entry(first, campaign, "OLD").status_code == 302
    assert Rater.objects.get(external_id="OLD").binding_hash
    assert entry(second, campaign, "OLD").status_code == 403


@pytest.mark.rating_paths()
def test_blocked_rater_cannot_come_back_with_a_new_id_in_the_same_browser(campaign, alice):
    services.block_rater(alice.rater.pk, "attention")
    r = entry(alice, campaign, "ALICE-AGAIN")
    assert r.status_code == 403 and b'id="blocked"' in r.content
    assert not Rater.objects.filter(external_id="ALICE-AGAIN").exists()
    # Another campaign is another matter.
    other = make_campaign()
    assert entry(alice, other, "ALICE-AGAIN").status_code == 302


@pytest.mark.rating_paths()
def test_study_id_must_match_and_session_id_is_recorded(db):
    campaign = make_campaign(external_study_id="STUDY1")
    r = entry(Client(), campaign, "P1", STUDY_ID="OTHER")
    assert r.status_code == 403 and b'data-reason="study"' in r.content
    r = Client().get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": "P1", "STUDY_ID": "STUDY1"})
    assert r.status_code == 403 and b'data-reason="session"' in r.content
    assert not Rater.objects.filter(campaign=campaign).exists()
    assert entry(Client(), campaign, "P1", STUDY_ID="STUDY1", SESSION_ID="SES9").status_code == 302
    assert Rater.objects.get(campaign=campaign).external_meta["SESSION_ID"] == "SES9"


@pytest.mark.rating_paths()
def test_signed_entry_links(db):
    campaign = make_campaign(require_signed_links=True)
    sig = hmac.new(campaign.entry_link_secret.encode(), f"{campaign.slug}:P7".encode(),
                   hashlib.sha256).hexdigest()
    missing = entry(Client(), campaign, "P7")
    assert missing.status_code == 403 and b'data-reason="signature"' in missing.content
    assert entry(Client(), campaign, "P7", sig="0" * 64).status_code == 403
    assert entry(Client(), campaign, "P8", sig=sig).status_code == 403  # another id's sig
    assert not Rater.objects.filter(campaign=campaign).exists()
    assert entry(Client(), campaign, "P7", sig=sig).status_code == 302
    # A campaign without the requirement still refuses a wrong signature when one is given.
    plain = make_campaign()
    assert entry(Client(), plain, "P7", sig="0" * 64).status_code == 403
    assert entry(Client(), plain, "P7").status_code == 302


# --- Rate limits (defect 6) ----------------------------------------------------------------


@pytest.mark.rating_paths()
def test_entry_is_rate_limited_per_ip_and_resets(campaign, settings):
    settings.RATE_LIMIT_ENTRY_PER_IP = (3, 1)
    fresh_window()
    for i in range(3):
        assert entry(Client(), campaign, f"N{i}").status_code == 302
    r = entry(Client(), campaign, "N3")
    assert r.status_code == 429 and b'id="rate-limited"' in r.content
    assert 1 <= int(r["Retry-After"]) <= 1
    assert not Rater.objects.filter(external_id="N3").exists()
    # Another address has its own count.
    assert entry(Client(REMOTE_ADDR="10.0.0.9"), campaign, "M1").status_code == 302
    fresh_window()
    assert entry(Client(), campaign, "N3").status_code == 302


def test_next_and_submit_are_rate_limited_per_rater(campaign, alice, settings):
    settings.RATE_LIMIT_ACTIONS_PER_RATER = (3, 1)
    fresh_window()
    holds = next_(alice, campaign).json()["assignments"]
    assert next_(alice, campaign).status_code == 200
    assert submit(alice, campaign, holds[0]["id"]).status_code == 201
    r = next_(alice, campaign)
    assert r.status_code == 429 and code(r) == "throttled" and r["Retry-After"] == "1"
    r = submit(alice, campaign, holds[1]["id"])
    assert r.status_code == 429 and Judgment.objects.count() == 1
    fresh_window()
    assert submit(alice, campaign, holds[1]["id"]).status_code == 201


def test_next_is_rate_limited_per_ip(campaign, alice, rater_client, settings):
    settings.RATE_LIMIT_ACTIONS_PER_IP = (3, 1)
    bob = rater_client(campaign, "BOB")
    bob.get(f"/rate/{campaign.slug}/")
    fresh_window()
    assert next_(alice, campaign).status_code == 200
    assert next_(alice, campaign).status_code == 200
    assert next_(bob, campaign).status_code == 200
    r = next_(bob, campaign)
    assert r.status_code == 429 and code(r) == "throttled"


# --- Login lockout (defect 6) ---------------------------------------------------------------


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_user("operator", password="right-pass-123",
                                                is_staff=True, is_superuser=True)


@pytest.mark.rating_paths()
@override_settings(AXES_FAILURE_LIMIT=3)
def test_admin_login_locks_out_after_failures(operator):
    client = Client()
    for _ in range(3):
        r = client.post("/admin/login/", {"username": "operator", "password": "wrong"})
        assert r.status_code in (200, 429)
    r = client.post("/admin/login/?next=/admin/",
                    {"username": "operator", "password": "right-pass-123"})
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert b'id="locked-out"' in r.content
    assert "_auth_user_id" not in client.session
    # Another address is not locked out.
    r = Client(REMOTE_ADDR="10.0.0.7").post(
        "/admin/login/?next=/admin/", {"username": "operator", "password": "right-pass-123"})
    assert r.status_code == 302


@pytest.mark.rating_paths()
@override_settings(AXES_FAILURE_LIMIT=3)
def test_basic_auth_locks_out_after_failures(operator):
    def basic(password: str) -> dict[str, str]:
        raw = base64.b64encode(f"operator:{password}".encode()).decode()
        return {"HTTP_AUTHORIZATION": f"Basic {raw}"}

    client = Client()
    assert client.get("/api/ratings/campaigns/", **basic("right-pass-123")).status_code == 200
    for _ in range(3):
        assert client.get("/api/ratings/campaigns/", **basic("wrong")).status_code in (401, 403, 429)
    r = client.get("/api/ratings/campaigns/", **basic("right-pass-123"))
    assert r.status_code == 429 and int(r["Retry-After"]) > 0
    assert r.json()["errors"][0]["code"] == "locked_out"


def test_no_identity_reaches_a_rater_in_any_byte(rater_client, lfw_dir):
    """Real photos ingested under a subject's name and from a named file: the rater's page,
    the next-pair JSON, the image URLs, the response headers and the image bytes themselves
    (no metadata chunk) carry no name, filename, id or checksum."""
    from models_app.faces.services import ingest_image
    from models_app.models import FaceImage

    labels = ("Aaron_Peirsol", "Abdullah_Gul")
    images: list[FaceImage] = []
    for label in labels:
        for path in sorted((lfw_dir / label).glob("*.jpg"))[:2]:
            images.append(ingest_image(path.read_bytes(), subject_label=label).image)
    campaign = make_campaign(judgments_per_pair=1)
    add_pairs(campaign, 2, images=images)
    client = rater_client(campaign, "IDENT1")
    seen: list[bytes] = [client.get(f"/rate/{campaign.slug}/").content]
    r = next_(client, campaign)
    seen.append(r.content)
    for a in r.json()["assignments"]:
        for key in ("left_url", "right_url"):
            img = client.get(a[key])
            assert img.status_code == 200
            seen.append(b"".join(img.streaming_content))
            seen.append(str(dict(img.headers)).encode())
    secrets = {label.encode() for label in labels} | {b"Aaron", b"Gul"}
    for image in images:
        secrets |= {str(image.pk).encode(), image.pk.hex.encode(), image.sha256.encode(),
                    str(image.subject_id).encode(), image.file.name.encode()}
    for blob in seen:
        for secret in secrets:
            assert secret not in blob, secret
