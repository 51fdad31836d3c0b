"""Answers the schema test found wrong: every /api/ answer is JSON in the one error shape."""

from __future__ import annotations

import base64

import pytest


@pytest.mark.django_db
def test_an_unmatched_api_path_is_a_json_404(client):
    r = client.post("/api/ratings/rate/not%20a%20slug!/next")
    assert r.status_code == 404 and r["Content-Type"] == "application/json"
    assert r.json()["errors"][0]["code"] == "not_found"
    # Outside /api/ the site's ordinary page.
    assert client.get("/no-such-page/").status_code == 404
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_basic_credentials_with_a_nul_byte_are_a_401_not_a_500(client):
    token = base64.b64encode(b"oper\x00ator:pw").decode()
    r = client.get("/api/images/", HTTP_AUTHORIZATION=f"Basic {token}")
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Basic")
