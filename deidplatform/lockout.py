"""Login lockout (django-axes) and the client address every rate limit counts by.

Admin login and API basic auth both go through ``django.contrib.auth.authenticate``, so
one authentication backend (first in ``AUTHENTICATION_BACKENDS``) refuses credentials
that are locked out, and axes counts the failures (``user_login_failed``) in the
``ratelimit`` cache. Settings: "Rate limits" in settings.py.
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def client_ip(request: Any) -> str:
    """The client address: REMOTE_ADDR, or the last entry of RATE_LIMIT_IP_HEADER (the
    one a trusted reverse proxy appended; earlier entries are the client's to forge)."""
    meta = getattr(request, "META", {})
    header = settings.RATE_LIMIT_IP_HEADER
    if header and meta.get(header):
        return meta[header].rsplit(",", 1)[-1].strip()
    return meta.get("REMOTE_ADDR") or "unknown"


class LockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check, for DRF requests too.

    DRF passes its own ``Request`` to ``authenticate``; axes would flag that object, which
    AxesMiddleware never sees, so a locked-out basic-auth call got DRF's plain 401/403.
    The flag goes on the Django request. Without a request (``manage.py`` code, the test
    client's ``login``) there is no client to count, so no check (axes would raise).
    """

    def authenticate(self, request: Any, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> None:
        if request is None:
            return None
        try:
            return super().authenticate(request, username, password, **kwargs)
        except AxesBackendPermissionDenied:
            getattr(request, "_request", request).axes_locked_out = True
            raise


def lockout_response(request: HttpRequest, original_response: Any = None,
                     credentials: Any = None) -> HttpResponse:
    """429 with Retry-After: JSON under /api/, a short page elsewhere (admin login)."""
    cool_off = get_cool_off(request)
    wait = max(1, math.ceil(cool_off.total_seconds())) if cool_off else 3600
    detail = "Too many failed logins. Try again later."
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            {"errors": [{"field": "non_field_errors", "code": "locked_out", "detail": detail}]},
            status=429,
        )
    else:
        response = render(request, "lockout.html", {"detail": detail, "wait": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response
