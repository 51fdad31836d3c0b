"""``/`` is a landing page, never Django's URL listing: sign-in when signed out, the
operator's ways in when signed in as staff, and no operator links for anyone else."""

from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_signed_out_offers_sign_in(client):
    r = client.get("/")
    assert r.status_code == 200
    body = r.content.decode()
    assert 'href="/admin/login/?next=/"' in body and "/api/docs/" not in body


@pytest.mark.django_db
def test_staff_get_admin_and_docs_links(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("op", is_staff=True))
    body = client.get("/").content.decode()
    assert 'href="/admin/"' in body and 'href="/api/docs/"' in body and "Sign out" in body


@pytest.mark.django_db
def test_non_staff_see_no_operator_links(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("someone"))
    body = client.get("/").content.decode()
    assert "/admin/" not in body.replace("/admin/logout/", "") and "/api/docs/" not in body


@pytest.mark.django_db
def test_docs_page_loads_swagger_from_this_site(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("op", is_staff=True))
    r = client.get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg" not in html and "@latest" not in html
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
