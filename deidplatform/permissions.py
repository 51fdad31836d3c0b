"""Who may do what in the operator API and the private file views.

``is_staff`` alone opens nothing: every operator endpoint needs a staff account *and* the
Django model permission of what it does (``view`` for reads too, unlike DRF's
``DjangoModelPermissions``). The permissions are handed out through three groups (roles),
created by a data migration and kept in step by :func:`ensure_roles`; superusers hold
every permission.

| role | may |
|---|---|
| viewer | read everything (images, jobs, runs, versions, campaigns, labels, exports) |
| operator | viewer + upload and delete images, start and cancel jobs, runs and rounds, promote and roll back versions, run campaigns |
| data steward | viewer + erase subjects and images, read the erasure audit |

No import of the platform's apps: permissions are named by string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from drf_spectacular.authentication import BasicScheme, SessionScheme
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

OPERATOR, DATA_STEWARD, VIEWER = "operator", "data steward", "viewer"

_VIEW = [
    "models_app.view_subject", "models_app.view_faceimage", "models_app.view_deidjob",
    "models_app.view_deidbatch", "models_app.view_deiditeration", "models_app.view_trainingrun",
    "models_app.view_modelversion", "models_app.view_round", "ratings.view_campaign", "ratings.view_pair",
    "ratings.view_pairlabel", "ratings.view_judgment", "ratings.view_rater",
]
ROLES: dict[str, list[str]] = {
    VIEWER: _VIEW,
    OPERATOR: _VIEW + [
        "models_app.add_faceimage", "models_app.delete_faceimage",
        "models_app.add_deidjob", "models_app.change_deidjob",
        "models_app.add_trainingrun", "models_app.change_trainingrun",
        "models_app.change_modelversion", "models_app.add_round", "models_app.change_round",
        "ratings.add_campaign", "ratings.change_campaign", "ratings.add_pair",
        "ratings.change_pairlabel",
    ],
    DATA_STEWARD: _VIEW + [
        "models_app.delete_subject", "models_app.delete_faceimage",
        "models_app.view_erasurerecord",
    ],
}

_BY_METHOD = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add",
              "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def ensure_roles(apps: Any = None) -> None:
    """Create the role groups with their permissions (idempotent). ``apps``: a migration's
    historical registry; permissions not yet created are skipped (the migration creates
    them first)."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    group_model = apps.get_model("auth", "Group")
    perm_model = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = group_model.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.extend(perm_model.objects.filter(
                content_type__app_label=app_label, codename=codename
            ))
        group.permissions.set(wanted)


def _staff(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def has_perms(user: AbstractBaseUser | AnonymousUser | None, perms: Iterable[str]) -> bool:
    """A staff account holding every one of ``perms`` (superusers hold all)."""
    return _staff(user) and user.has_perms(list(perms))  # type: ignore[union-attr]


def required_perms(request: Request, view: Any) -> list[str]:
    """The view's ``action_perms[action]`` (a list, or a callable of the view), else the
    queryset model's permission for the HTTP method (``view`` for reads)."""
    action = getattr(view, "action", None)
    explicit: dict[str, list[str] | Callable[[Any], list[str]]] = getattr(view, "action_perms", {})
    if action in explicit:
        perms = explicit[action]
        return list(perms(view) if callable(perms) else perms)
    queryset = getattr(view, "queryset", None)
    if queryset is None:  # the API root: a list of links, staff only
        return []
    model = queryset.model
    verb = _BY_METHOD.get(request.method or "", "change")
    return [f"{model._meta.app_label}.{verb}_{model._meta.model_name}"]


class RolePermission(BasePermission):
    """The API's default: staff with the model permission of the action (see the module)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not _staff(request.user):
            return False
        return has_perms(request.user, required_perms(request, view))


class ApiSessionAuthentication(SessionAuthentication):
    """Session authentication that lets a basic-auth client's failure be a 401.

    DRF takes the ``WWW-Authenticate`` challenge from the first authentication class; the
    session has none, so a wrong basic-auth password answered 403. A request that sent
    basic credentials gets the basic challenge (401); browsers keep their 403."""

    def authenticate_header(self, request: Request) -> str | None:
        if request.META.get("HTTP_AUTHORIZATION", "").lower().startswith("basic "):
            return 'Basic realm="api"'
        return None


class ApiBasicAuthentication(BasicAuthentication):
    """Basic authentication that refuses credentials no account can have (a NUL byte would
    reach the database as a 500) with the ordinary 401."""

    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> Any:
        if "\x00" in userid or "\x00" in password:
            raise AuthenticationFailed("Invalid username/password.")
        return super().authenticate_credentials(userid, password, request)


class ApiBasicScheme(BasicScheme):
    """The OpenAPI description of :class:`ApiBasicAuthentication` (HTTP basic)."""

    target_class = "deidplatform.permissions.ApiBasicAuthentication"


class ApiSessionScheme(SessionScheme):
    """The OpenAPI description of :class:`ApiSessionAuthentication` (a session cookie)."""

    target_class = "deidplatform.permissions.ApiSessionAuthentication"
