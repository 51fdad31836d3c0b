"""The permission matrix (issue 12, defect 7): role x endpoint x method.

``is_staff`` alone opens nothing; each role reaches exactly what its permissions name
(``deidplatform.permissions.ROLES``); superusers reach everything; the private face file
view answers 404 to everyone else (it does not confirm that an id exists)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from deidplatform.permissions import DATA_STEWARD, OPERATOR, ROLES, VIEWER, ensure_roles
from models_app.models import Subject
from tests.ratings.factories import make_campaign, make_image

ROLE_NAMES = ["anonymous", "staff without a role", VIEWER, OPERATOR, DATA_STEWARD, "superuser"]

# (method, url template, body, the permission it needs). {image}, {subject}, {campaign}
# are filled with fresh rows per test. Allowed calls use bodies that are refused (400) or
# harmless, so no task is queued.
ENDPOINTS = [
    ("get", "/api/images/", None, "models_app.view_faceimage"),
    ("get", "/api/images/{image}/", None, "models_app.view_faceimage"),
    ("post", "/api/images/", "multipart", "models_app.add_faceimage"),
    ("delete", "/api/images/{image}/", None, "models_app.delete_faceimage"),
    ("get", "/faces/{image}/chip", None, "models_app.view_faceimage"),
    ("get", "/api/subjects/", None, "models_app.view_subject"),
    ("delete", "/api/subjects/{subject}/", None, "models_app.delete_subject"),
    ("get", "/api/deid-jobs/", None, "models_app.view_deidjob"),
    ("post", "/api/deid-jobs/", {}, "models_app.add_deidjob"),
    ("post", "/api/deid-jobs/batch/", {}, "models_app.add_deidjob"),
    ("get", "/api/training-runs/", None, "models_app.view_trainingrun"),
    ("post", "/api/training-runs/", {"config": "bad"}, "models_app.add_trainingrun"),
    ("get", "/api/model-versions/", None, "models_app.view_modelversion"),
    ("post", "/api/model-versions/rollback/", {}, "models_app.change_modelversion"),
    ("get", "/api/ratings/campaigns/", None, "ratings.view_campaign"),
    ("post", "/api/ratings/campaigns/", {}, "ratings.add_campaign"),
    ("patch", "/api/ratings/campaigns/{campaign}/", {"gold_rate": 5}, "ratings.change_campaign"),
    ("post", "/api/ratings/campaigns/{campaign}/pairs/", {"pairs": []}, "ratings.add_pair"),
    ("get", "/api/ratings/campaigns/{campaign}/labels/", None, "ratings.view_pairlabel"),
    ("post", "/api/ratings/campaigns/{campaign}/recompute/", {"method": "nope"},
     "ratings.change_pairlabel"),
    ("get", "/api/ratings/campaigns/{campaign}/exports/judgments/csv/", None,
     "ratings.view_judgment"),
    ("get", "/api/ratings/campaigns/{campaign}/exports/labels/jsonl/", None,
     "ratings.view_pairlabel"),
]


def _client_for(role: str, django_user_model) -> Client:
    client = Client()
    if role == "anonymous":
        return client
    if role == "superuser":
        user = django_user_model.objects.create_superuser("root", password="pw")
    else:
        user = django_user_model.objects.create_user("someone", password="pw", is_staff=True)
        if role in ROLES:
            ensure_roles()
            user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return client


def _allowed(role: str, perm: str) -> bool:
    return role == "superuser" or perm in ROLES.get(role, [])


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("method,url,body,perm", ENDPOINTS, ids=[f"{m} {u}" for m, u, _, _ in ENDPOINTS])
def test_permission_matrix(role, method, url, body, perm, django_user_model):
    client = _client_for(role, django_user_model)
    subject = Subject.objects.create(label="subject-x")
    image = make_image()
    campaign = make_campaign()
    url = url.format(image=image.pk, subject=subject.pk, campaign=campaign.pk)
    kwargs = {}
    if body == "multipart":
        kwargs = {"data": {}}
    elif body is not None:
        kwargs = {"data": body, "content_type": "application/json"}
    r = getattr(client, method)(url, **kwargs)
    if url.startswith("/faces/"):
        # The file view never says 403: it does not confirm that an id exists.
        assert r.status_code == (200 if _allowed(role, perm) else 404), r.content
        return
    if _allowed(role, perm):
        assert r.status_code not in (401, 403), (r.status_code, r.content)
        assert r.status_code < 500
    else:
        assert r.status_code == 403, (r.status_code, r.content)
        assert r["content-type"] == "application/json", r["content-type"]
        assert r.json()["errors"][0]["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.django_db
def test_roles_come_from_the_migration():
    """A migrated database has the three groups with their permissions."""
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        have = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        assert have == set(perms), name


@pytest.mark.django_db
def test_a_non_staff_user_with_permissions_gets_nothing(django_user_model):
    """Permissions without a staff account open nothing either (raters have accounts)."""
    user = django_user_model.objects.create_user("rater", password="pw")
    user.groups.add(Group.objects.get(name=OPERATOR))
    client = Client()
    client.force_login(user)
    assert client.get("/api/images/").status_code == 403
    assert client.get(f"/faces/{make_image().pk}/chip").status_code == 404
