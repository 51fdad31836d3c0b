"""The rater hot path on PostgreSQL: an answer and the next pair in one SQL statement.

A rater's loop is "POST judgment -> reply carries the next pair". Through the ORM and DRF
that was ~13 SQL statements and most of 20 ms of CPU per judgment; here the common case is
one call of the PL/pgSQL function ``ratings_hot`` (ratings/sql/ratings_hot.sql, installed
by migration 0004), whose reply is turned
into the same JSON as the DRF views, without serializers.

Whatever is not the common case goes to the reference path (``services`` through the DRF
views in ``api.py``) with *nothing written* (so every rejection, with its code's one
status, comes from those views: this module never writes an error itself): no session rater, a body that is not plainly
valid (DRF then gives the usual 4xx JSON), a failed CSRF check (same), an unknown or
someone else's assignment, a retry, an expired hold, a blocked or not yet qualified rater,
a missing (or declined) consent, a finished rater. After a recorded judgment, a next pair that needs the Python path
(an own overdue hold, every candidate locked with no pair lock held) is chosen by
``services.assignment.next_assignments`` right after. Same rules, same lock order: ASSIGNMENT.md.

SQLite (the embedded default) has no such function; ``available()`` is False there.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from rest_framework.authentication import CSRFCheck

from . import selectors
from .services.assignment import DEFAULT_HOLDS, NextResult, maybe_reclaim, next_assignments
from .services.labels import queue_label_update
from .services.raters import release_blocked_rater

log = logging.getLogger(__name__)

_SQL = "SELECT ratings_hot(%s, %s, %s, %s, %s, %s, %s, %s)"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# slug -> campaign id, learnt from the function's replies: only used to run the throttled
# campaign-wide reclaim *before* the call (reclaiming a wrong campaign would be harmless).
_campaign_ids: dict[str, int] = {}


def available() -> bool:
    """PostgreSQL with the function; ``RATINGS_HOT_PATH = False`` forces the ORM path."""
    return connection.vendor == "postgresql" and settings.RATINGS_HOT_PATH


# --- Request checks (anything unusual: return None and let the DRF view answer) ---------


def session_rater_hex(request: HttpRequest, slug: str, session_key: str) -> str | None:
    """The session's rater id for ``slug`` (32 hex digits), without a database query."""
    value = (request.session.get(session_key) or {}).get(slug)
    if not isinstance(value, str) or len(value) != 32:
        return None
    try:
        return uuid.UUID(hex=value).hex
    except ValueError:
        return None


def csrf_ok(request: HttpRequest) -> bool:
    """The same check DRF's session authentication makes (``CsrfAlwaysSession``)."""
    check = CSRFCheck(lambda _request: None)  # type: ignore[arg-type]
    check.process_request(request)
    return check.process_view(request, None, (), {}) is None


def parse_judgment(request: HttpRequest) -> tuple[bool, int, int] | None:
    """``same``, ``confidence``, ``response_ms`` when the JSON body is plainly valid (as
    ``JudgmentInSerializer`` would accept it); None for anything else."""
    if request.content_type != "application/json":
        return None
    try:
        data = json.loads(request.body)
    except (ValueError, RequestDataTooBig):
        return None
    if not isinstance(data, dict):
        return None
    same, confidence, response_ms = (
        data.get("same"), data.get("confidence"), data.get("response_ms")
    )
    if type(same) is not bool or type(confidence) is not int or type(response_ms) is not int:
        return None
    if not (1 <= confidence <= 4 and 0 <= response_ms <= 3_600_000):
        return None
    return same, confidence, response_ms


# --- The call -------------------------------------------------------------------------------


def call(rater_hex: str, slug: str, assignment: uuid.UUID | None, judgment: tuple | None,
         now: datetime, holds: int) -> dict[str, Any]:
    """One statement, its own transaction (autocommit), or part of the caller's."""
    campaign_id = _campaign_ids.get(slug)
    if campaign_id is not None:
        maybe_reclaim(campaign_id, now)  # throttled: at most 1/s per process
    same, confidence, response_ms = judgment or (None, None, None)
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [uuid.UUID(hex=rater_hex), slug, assignment, same, confidence,
                              response_ms, now, holds])
        out = cursor.fetchone()[0]
    if isinstance(out, str):  # Django loads jsonb as text
        out = json.loads(out)
    if out.get("campaign_id") is not None:
        _campaign_ids[slug] = out["campaign_id"]
    return out


# --- Replies (the shapes of NextSerializer / JudgmentOutSerializer) -----------------------


def _iso(value: datetime) -> str:
    """As DRF's DateTimeField renders it."""
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_url_parts: dict[tuple[str, str], tuple[str, str]] = {}


def clear_caches() -> None:
    """Forget cached slug→id and URL parts (tests; a campaign slug reused after deletion)."""
    _campaign_ids.clear()
    _url_parts.clear()
_HOLE = "zzHOLEzz"  # matches the slug and str converters


def _url(name: str, arg: str) -> str:
    """``reverse(name, args=[arg])``, the pattern reversed once per script prefix: reverse()
    was a sixth of this path's CPU (five per reply, each asking for the active language).
    Only for URL-safe args (signed tokens, slugs), which reverse() would not quote."""
    key = (get_script_prefix(), name)
    parts = _url_parts.get(key)
    if parts is None:
        head, _, tail = reverse(name, args=[_HOLE]).rpartition(_HOLE)
        parts = _url_parts[key] = (head, tail)
    return parts[0] + arg + parts[1]


def _item(slug: str, rater_hex: str, public_id: str, phase: str, expires: datetime) -> dict:
    a_hex = public_id.replace("-", "")
    return {
        "id": public_id, "phase": phase,
        "left_url": _url("ratings:image", selectors.signed_image_token(a_hex, rater_hex, "left")),
        "right_url": _url("ratings:image",
                          selectors.signed_image_token(a_hex, rater_hex, "right")),
        "expires": _iso(expires),
    }


def _progress(out: dict) -> dict[str, Any]:
    """selectors.rater_progress for a qualified rater (the only kind served here)."""
    return vars(selectors.progress_from_counts(
        qualified=True, judgments=out["judgments_count"], gold=out["gold_count"],
        attention=out["attention_count"], q_target=out["qualification_size"],
        quota=out["rater_quota"], min_work_pairs=out["min_work_pairs"],
        n_deid=selectors.open_deid_pairs(out["campaign_id"]),
    ))


def _next_json(slug: str, out: dict, progress: dict) -> dict[str, Any]:
    nxt = out["next"]
    items = [
        _item(slug, out["rater"], a["id"], a["phase"],
              _EPOCH + timedelta(microseconds=a["expires_us"]))
        for a in nxt["assignments"]
    ]
    return {"status": nxt["status"], "assignments": items, "progress": progress,
            "end_url": _url("ratings:done", slug)}


def _orm_next_json(slug: str, result: NextResult) -> dict[str, Any] | None:
    """The same shape from a NextResult of the Python path (after ``next_fallback``)."""
    rater = result.rater
    assert rater is not None
    if result.status in ("blocked", "consent_required"):
        return None
    status = result.status
    if status == "no_work" and not rater.qualified and rater.gold_count:
        status = "qualifying_wait"
    r_hex = rater.public_id.hex
    items = [_item(slug, r_hex, str(a.public_id), a.phase, a.expires)
             for a in result.assignments]
    progress = vars(selectors.rater_progress(rater, rater.campaign))
    return {"status": status, "assignments": items, "progress": progress,
            "end_url": _url("ratings:done", slug)}


def json_response(data: dict[str, Any], status: int) -> HttpResponse:
    """JSON as DRF's JSONRenderer writes it, with the headers the DRF views send."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Allow"] = "POST, OPTIONS"
    patch_vary_headers(response, ("Accept",))
    return response


def next_reply(slug: str, rater_hex: str) -> HttpResponse | None:
    """POST next: the rater's holds topped up to 2, or None (use the DRF view)."""
    out = call(rater_hex, slug, None, None, timezone.now(), DEFAULT_HOLDS)
    if out["outcome"] != "ok" or out["next"] is None:
        return None  # the DRF view runs the Python path (idempotent: same holds)
    return json_response(_next_json(slug, out, _progress(out)), 200)


def submit_reply(slug: str, rater_hex: str, assignment: uuid.UUID,
                 judgment: tuple[bool, int, int]) -> HttpResponse | None:
    """POST judgment: record it and answer with the next holds, or None (DRF view)."""
    now = timezone.now()
    out = call(rater_hex, slug, assignment, judgment, now, DEFAULT_HOLDS)
    if out["outcome"] == "fallback":
        return None  # nothing was written
    campaign_id, rater_id = out["campaign_id"], out["rater_id"]
    if out["queue_labels"]:  # the function set labels_pending (services.mark_labels_pending)
        queue_label_update(campaign_id)
    blocked = out["blocked"]
    progress = _progress(out)
    nxt: dict[str, Any] | None = None
    if blocked:
        log.info("rater %s blocked: %s", out["rater"], out["blocked_reason"])
        # Separate transaction, as in services.submit_judgment (lock order).
        release_blocked_rater(rater_id, now=now)
    elif out["outcome"] == "next_fallback":
        result = next_assignments(rater_id, campaign_id=campaign_id, holds=DEFAULT_HOLDS, now=now)
        nxt = _orm_next_json(slug, result)
        if result.rater is not None and result.rater.blocked:
            blocked = True
    else:
        nxt = _next_json(slug, out, progress)
    return json_response({
        "status": "recorded", "rater_status": "blocked" if blocked else "ok",
        "too_fast": out["too_fast"], "progress": progress, "next": nxt,
    }, 201)
