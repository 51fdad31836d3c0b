"""Binding an external participant to the browser of their first entry, and signed links.

A bare participant id (``?PROLIFIC_PID=...``) is public enough to be guessed or shared, so
it is not a credential. At the first entry the browser gets a random secret in a signed,
HttpOnly cookie (one per browser, reused across campaigns); the rater keeps its SHA-256
(``Rater.binding_hash``). Afterwards only a browser with that cookie may act as that
rater: on entry, on the pages and on both rating paths (the DRF views compare with the
database, the SQL hot path with the hash the session noted at entry: no query).

Optional signed entry links: ``sig`` = hex HMAC-SHA256 keyed with the campaign's
``entry_link_secret`` of ``"<campaign slug>:<participant id>"``. README "Rater entry links".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from .models import Campaign, Rater

_SALT = "ratings.binding"
SESSION_BOUND = "ratings_bound"  # campaign slug -> binding hash noted at entry


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cookie_token(request: HttpRequest) -> str | None:
    """The browser's binding secret, when its cookie is present and its signature holds."""
    token = request.get_signed_cookie(
        settings.RATINGS_BINDING_COOKIE, default=None, salt=_SALT,
        max_age=settings.RATINGS_BINDING_MAX_AGE,
    )
    return token if token else None


def request_hash(request: HttpRequest) -> str:
    """SHA-256 of the browser's binding secret ("" without a valid cookie), once per request."""
    cached = getattr(request, "_ratings_binding_hash", None)
    if cached is None:
        token = cookie_token(request)
        cached = token_hash(token) if token else ""
        request._ratings_binding_hash = cached  # type: ignore[attr-defined]
    return cached


def set_cookie(response: HttpResponse, token: str) -> None:
    response.set_signed_cookie(
        settings.RATINGS_BINDING_COOKIE, token, salt=_SALT,
        max_age=settings.RATINGS_BINDING_MAX_AGE, httponly=True,
        secure=settings.SESSION_COOKIE_SECURE, samesite="Lax",
    )


def rater_ok(request: HttpRequest, rater: Rater) -> bool:
    """May this browser act as ``rater``? Raters without a binding (accounts, raters from
    before binding existed) are not bound."""
    if not rater.binding_hash:
        return True
    return hmac.compare_digest(request_hash(request), rater.binding_hash)


def remember(request: HttpRequest, slug: str, binding_hash: str) -> None:
    bound = dict(request.session.get(SESSION_BOUND, {}))
    bound[slug] = binding_hash
    request.session[SESSION_BOUND] = bound


def session_ok(request: Any, slug: str) -> bool:
    """The hot path's check, without a query: the cookie matches the binding this session
    noted at entry ("" noted: an unbound rater, e.g. an account). False when the session
    noted nothing (the DRF view decides then)."""
    bound = (request.session.get(SESSION_BOUND) or {}).get(slug)
    if not isinstance(bound, str):
        return False
    return not bound or hmac.compare_digest(request_hash(request), bound)


def link_signature(campaign: Campaign, external_id: str) -> str:
    message = f"{campaign.slug}:{external_id}".encode()
    return hmac.new(campaign.entry_link_secret.encode(), message, hashlib.sha256).hexdigest()


def link_ok(campaign: Campaign, external_id: str, sig: str) -> bool:
    if not campaign.entry_link_secret or not sig:
        return False
    return hmac.compare_digest(link_signature(campaign, external_id), sig.lower())
