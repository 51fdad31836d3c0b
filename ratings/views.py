"""Rater pages (server-rendered) and the signed image view.

Pages carry only the campaign's public slug and opaque assignment ids; images come through
signed, short-lived tokens bound to the rater's session and open assignment.
"""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from models_app.faces.serving import private_file_response
from models_app.models import FaceImage

from . import binding, selectors, services, throttle
from .errors import BLOCKED, NOT_THIS_BROWSER, RatingError
from .models import Assignment, Campaign, Rater
from .session import SESSION_KEY, remember_rater, session_rater

# External crowds pass their ids as URL parameters; accept a conservative alphabet only.
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_ENTRY_PARAMS = {
    Rater.Source.PROLIFIC: ("PROLIFIC_PID", ("STUDY_ID", "SESSION_ID")),
    Rater.Source.MTURK: ("workerId", ("assignmentId", "hitId")),
}


def _campaign(slug: str) -> Campaign:
    return get_object_or_404(Campaign.objects.exclude(status=Campaign.Status.DRAFT), slug=slug)


def _page_rater(
    request: HttpRequest, campaign: Campaign, *, create: bool = False, allow_blocked: bool = False
) -> Rater | HttpResponse:
    """The prelude of every rater page: the session's rater in ``campaign``, or the page
    that refuses it (no rater: 403 "open the study link"; blocked: the polite page).
    ``create``: a logged-in user without a rater yet becomes one (the landing page)."""
    rater = session_rater(request, campaign)
    if rater is None and create and request.user.is_authenticated:
        rater = services.get_or_create_rater(campaign, user=request.user)
        remember_rater(request, campaign, rater)
    if rater is None:
        return render(request, "ratings/no_access.html", {"campaign": campaign}, status=403)
    if not binding.rater_ok(request, rater):
        return _already_bound(request, campaign)
    if rater.blocked and not allow_blocked:
        return screened_out_page(request, campaign)
    return rater


def screened_out_page(request: HttpRequest, campaign: Campaign, *, declined: bool = False,
                      status: int = 200) -> HttpResponse:
    """A participant who may not go on (failed checks, or declined consent): the campaign's
    screen-out code and its return URL (Prolific's convention), not a dead end."""
    template = "ratings/declined.html" if declined else "ratings/blocked.html"
    return render(request, template, {"campaign": campaign}, status=status)


def _already_bound(request: HttpRequest, campaign: Campaign) -> HttpResponse:
    """The participant id is bound to another browser (no identity on this page)."""
    return render(request, "ratings/already_bound.html", {"campaign": campaign}, status=403)


def _entry_refused(request: HttpRequest, campaign: Campaign, reason: str,
                   detail: str) -> HttpResponse:
    return render(request, "ratings/entry_refused.html",
                  {"campaign": campaign, "reason": reason, "detail": detail}, status=403)


def _entry_check(request: HttpRequest, campaign: Campaign, source: str, external_id: str,
                 meta: dict[str, str]) -> HttpResponse | None:
    """The campaign's entry rules: its study id (and a session id with it) for Prolific
    links, and the link's signature when the campaign requires one (or one is given)."""
    if campaign.external_study_id and source == Rater.Source.PROLIFIC:
        if request.GET.get("STUDY_ID", "") != campaign.external_study_id:
            return _entry_refused(request, campaign, "study",
                                  "This link belongs to a different study.")
        if not meta.get("SESSION_ID"):
            return _entry_refused(request, campaign, "session",
                                  "This link has no study session.")
    sig = request.GET.get("sig", "")
    if (campaign.require_signed_links or sig) and not binding.link_ok(campaign, external_id, sig):
        return _entry_refused(request, campaign, "signature",
                              "This link's signature is missing or wrong.")
    return None


def rate_limited_page(request: HttpRequest, campaign: Campaign, wait: int) -> HttpResponse:
    response = render(request, "ratings/rate_limited.html",
                      {"campaign": campaign, "wait": wait}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _external_identity(request: HttpRequest) -> tuple[str, str, dict[str, str]] | None:
    for source, (id_param, extra) in _ENTRY_PARAMS.items():
        value = request.GET.get(id_param, "")
        if value:
            if not _EXTERNAL_ID.match(value):
                return None
            meta = {k: v for k in extra if _EXTERNAL_ID.match(v := request.GET.get(k, ""))}
            return source, value, meta
    return None


@require_GET
def rate(request: HttpRequest, slug: str) -> HttpResponse:
    """Entry and landing: creates or resumes the rater, then shows the right step."""
    campaign = _campaign(slug)
    if request.GET:
        identity = _external_identity(request)
        new_token = None
        if identity is not None:
            source, external_id, meta = identity
            if request.GET.get("assignmentId") == "ASSIGNMENT_ID_NOT_AVAILABLE":
                return render(request, "ratings/preview.html", {"campaign": campaign})
            wait = throttle.hit([("entry", throttle.client_ip(request),
                                  settings.RATE_LIMIT_ENTRY_PER_IP)])
            if wait:
                return rate_limited_page(request, campaign, wait)
            refused = _entry_check(request, campaign, source, external_id, meta)
            if refused is not None:
                return refused
            token = binding.cookie_token(request)
            if token is None:
                token = new_token = binding.new_token()
            bound_to = binding.token_hash(token)
            try:
                rater = services.get_or_create_rater(
                    campaign, source=source, external_id=external_id, meta=meta,
                    binding_hash=bound_to,
                )
            except RatingError as exc:
                if exc.code == NOT_THIS_BROWSER:
                    return _already_bound(request, campaign)
                if exc.code == BLOCKED:
                    return screened_out_page(request, campaign, status=403)
                raise
            request.session.cycle_key()
            remember_rater(request, campaign, rater)
        # Drop the participant ids from the address bar, history and any later Referer.
        response = redirect("ratings:rate", slug=campaign.slug)
        if new_token is not None:
            binding.set_cookie(response, new_token)
        return response
    rater = _page_rater(request, campaign, create=True)
    if isinstance(rater, HttpResponse):
        return rater
    if rater.declined_at is not None:  # declined consent: screened out for good
        return screened_out_page(request, campaign, declined=True)
    if campaign.status != Campaign.Status.ACTIVE:
        return render(request, "ratings/no_work.html", {"campaign": campaign, "closed": True})
    if campaign.consent_text and rater.consented_at is None:
        return render(request, "ratings/consent.html", {
            "campaign": campaign, "progress": selectors.rater_progress(rater, campaign)})
    if rater.finished_at is not None:  # done for good: the same code again
        return render(request, "ratings/done.html", {"campaign": campaign})
    progress = selectors.rater_progress(rater, campaign)
    config = {
        "next_url": reverse("ratings:api-next", args=[campaign.slug]),
        "submit_url_template": reverse(
            "ratings:api-submit", args=[campaign.slug, "00000000-0000-0000-0000-000000000000"]
        ),
        "done_url": reverse("ratings:done", args=[campaign.slug]),
    }
    return render(request, "ratings/pair.html", {
        "campaign": campaign, "progress": progress, "config": config,
    })


@require_POST
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    """The rater agrees to the consent text, then goes on to the landing page."""
    campaign = _campaign(slug)
    rater = _page_rater(request, campaign, allow_blocked=True)  # as before: harmless
    if isinstance(rater, HttpResponse):
        return rater
    if rater.declined_at is None:
        services.record_consent(rater)
    return redirect("ratings:rate", slug=campaign.slug)


@require_POST
def decline(request: HttpRequest, slug: str) -> HttpResponse:
    """The rater does not consent: screened out (the campaign's screen-out code and return
    URL), and the link shows that page from then on."""
    campaign = _campaign(slug)
    rater = _page_rater(request, campaign, allow_blocked=True)
    if isinstance(rater, HttpResponse):
        return rater
    services.record_declined(rater)
    return redirect("ratings:rate", slug=campaign.slug)


@require_GET
def done(request: HttpRequest, slug: str) -> HttpResponse:
    """End page: completion code (and redirect) when the rater finished; otherwise explain."""
    campaign = _campaign(slug)
    rater = _page_rater(request, campaign)
    if isinstance(rater, HttpResponse):
        return rater
    if rater.finished_at is not None:
        return render(request, "ratings/done.html", {"campaign": campaign})
    status = services.finish_session(rater.pk)
    if status == "finished":
        return render(request, "ratings/done.html", {"campaign": campaign})
    if status in ("no_work", "closed"):
        return render(request, "ratings/no_work.html", {
            "campaign": campaign, "progress": selectors.rater_progress(rater, campaign)})
    return redirect("ratings:rate", slug=campaign.slug)


@require_GET
def image(request: HttpRequest, token: str) -> HttpResponse:
    """A face image of the rater's own open assignment, by signed token; 404 otherwise."""
    rater = None
    token_rater = _token_rater(token)
    if token_rater and token_rater in request.session.get(SESSION_KEY, {}).values():
        rater = (Rater.objects.select_related("campaign")
                 .filter(public_id=uuid.UUID(token_rater)).first())
    face = selectors.image_for_token(token, rater)
    if face is None or not _hold_live(token):
        raise Http404
    assert rater is not None
    response = _face_response(face, rater.campaign.rater_image)
    # Cached only by this browser, briefly, so the preloaded next pair shows at once.
    response["Cache-Control"] = "private, max-age=120"
    response["Content-Disposition"] = 'inline; filename="face.png"'
    return response


def _face_response(face: FaceImage, shown: str) -> HttpResponse:
    """What the campaign shows raters of a face (``Campaign.rater_image``), at its native
    size: the full photo; the context crop (computed; the photo when the face has no
    stored landmarks); or the aligned chip (the photo when there is none)."""
    if shown == Campaign.RaterImage.CHIP and face.chip:
        return private_file_response(face, "chip")
    if shown == Campaign.RaterImage.CONTEXT:
        png = selectors.context_crop_png(face)
        if png is not None:
            response = HttpResponse(png, content_type="image/png")
            response["X-Content-Type-Options"] = "nosniff"
            return response
    return private_file_response(face, "image")


def _hold_live(token: str) -> bool:
    """The token's hold has not expired. An expired hold stays ``issued`` until the reclaim
    sweep closes it, and must not serve its image meanwhile."""
    payload = signing.loads(token, salt=selectors.IMAGE_SALT)  # verified by image_for_token
    return Assignment.objects.filter(
        public_id=uuid.UUID(payload["a"]), expires__gt=timezone.now()
    ).exists()


def _token_rater(token: str) -> str | None:
    try:
        payload = signing.loads(token, salt=selectors.IMAGE_SALT)
    except signing.BadSignature:
        return None
    value = payload.get("r") if isinstance(payload, dict) else None
    return value if isinstance(value, str) and len(value) == 32 else None
