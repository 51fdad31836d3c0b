"""Issue 12, defect 9: export errors are JSON, an oversized JSON body is a JSON 413, a
failed basic-auth login is a 401 with its challenge, an expired hold serves no image,
and the production steps collect static files."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from ratings.models import Assignment, Rater
from tests.conftest import staff_user
from tests.helpers import REPO
from tests.ratings.factories import add_pairs, make_campaign


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["*/*", "text/csv", "application/json"])
def test_export_errors_are_json(staff_client, accept):
    r = staff_client.get("/api/ratings/campaigns/999999/exports/judgments/csv/", HTTP_ACCEPT=accept)
    assert r.status_code == 404
    assert r["content-type"] == "application/json"
    assert r.json()["errors"][0]["field"] == "non_field_errors"


@pytest.mark.django_db
def test_export_refusal_is_json(django_user_model):
    client = Client()
    client.force_login(staff_user(django_user_model, "norole", None))
    camp = make_campaign()
    r = client.get(f"/api/ratings/campaigns/{camp.pk}/exports/labels/csv/", HTTP_ACCEPT="text/csv")
    assert r.status_code == 403 and r["content-type"] == "application/json"
    assert r.json()["errors"][0]["code"] == "permission_denied"


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/ratings/campaigns/", "/api/training-runs/", "/api/deid-jobs/"])
def test_a_10_mb_json_body_is_a_json_413(staff_client, url):
    body = json.dumps({"config": {"x": "a" * (10 * 1024 * 1024)}})
    r = staff_client.post(url, body, content_type="application/json")
    assert r.status_code == 413, r.content[:200]
    assert r["content-type"] == "application/json"
    assert r.json()["errors"][0]["code"] == "request_too_large"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.django_db
def test_failed_basic_auth_is_401_with_a_challenge(django_user_model):
    staff_user(django_user_model, "op", "operator")
    client = Client()
    r = client.get("/api/images/", HTTP_AUTHORIZATION=_basic("op", "wrong"))
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Basic")
    assert r["content-type"] == "application/json"
    ok = client.get("/api/images/", HTTP_AUTHORIZATION=_basic("op", "pw"))
    assert ok.status_code == 200
    # A browser without credentials keeps its 403 (no login pop-up).
    bare = Client().get("/api/images/")
    assert bare.status_code == 403 and "WWW-Authenticate" not in bare


@pytest.mark.django_db
def test_an_expired_hold_serves_no_image():
    camp = make_campaign()
    add_pairs(camp, 2)
    client = Client()
    entry = client.get(f"/rate/{camp.slug}/", {"PROLIFIC_PID": "PIDX", "STUDY_ID": "S",
                                               "SESSION_ID": "X"})
    assert entry.status_code == 302, entry.content
    rater = Rater.objects.get(campaign=camp, external_id="PIDX")
    rater.consented_at = rater.created
    rater.save()
    r = client.post(f"/api/ratings/rate/{camp.slug}/next", content_type="application/json")
    assert r.status_code == 200, r.content
    item = r.json()["assignments"][0]
    assert client.get(item["left_url"]).status_code == 200
    # The hold expires; the reclaim sweep has not closed it yet (still "issued").
    Assignment.objects.filter(public_id=item["id"]).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    assert Assignment.objects.get(public_id=item["id"]).state == Assignment.State.ISSUED
    assert client.get(item["left_url"]).status_code == 404
    assert client.get(item["right_url"]).status_code == 404


def test_production_steps_collect_static_files():
    """/admin/login/ is a 500 with DEBUG=0 without collected static files (whitenoise's
    manifest): the README's steps and the container both collect them."""
    readme = (REPO / "README.md").read_text()
    production = readme.split("## Production", 1)[1].split("### docker compose", 1)[0]
    assert "collectstatic" in production
    compose = (REPO / "docker-compose.yml").read_text()
    web = compose.split("\n  web:", 1)[1].split("\n  worker", 1)[0]
    assert web.index("collectstatic") < web.index("granian")
