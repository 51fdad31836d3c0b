"""REST API: staff endpoints for campaigns, pairs, labels and exports; rater endpoints for
next-assignment and submission. Thin: parse, call a service or selector, shape the answer."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.authentication import SessionScheme
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deidplatform.permissions import RolePermission

from . import binding, hotpath, selectors, services, throttle
from .errors import BLOCKED, CONSENT_REQUIRED, NOT_A_RATER, NOT_THIS_BROWSER, RatingError
from .models import Campaign, PairLabel, Rater
from .serializers import (
    CampaignSerializer,
    JudgmentInSerializer,
    JudgmentOutSerializer,
    NextSerializer,
    PairBulkSerializer,
    PairLabelSerializer,
    PairOutSerializer,
    QueuedSerializer,
    RecomputeSerializer,
)
from .services.gold import add_gold_pairs, ensure_known_answer_pairs
from .session import SESSION_KEY, session_rater
from .tasks import update_campaign_labels_task

# --- Staff -----------------------------------------------------------------------------------


class PassthroughRenderer(BaseRenderer):
    """Lets streamed CSV/JSONL responses pass content negotiation untouched."""

    media_type = "*/*"
    format = "stream"

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict | None = None) -> Any:
        return data


def _stream(rows: Iterator[dict[str, Any]], fields: list[str], fmt: str) -> Iterator[str]:
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(row, separators=(",", ":")) + "\n"
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for i, row in enumerate(rows, 1):
        writer.writerow(row)
        if i % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


class GoldPairsSerializer(serializers.Serializer):
    n_same = serializers.IntegerField(min_value=0, max_value=10_000, default=0)
    n_different = serializers.IntegerField(min_value=0, max_value=10_000, default=0)
    n_attention = serializers.IntegerField(
        min_value=0, max_value=10_000, default=0,
        help_text="Attention checks: one source shown twice (the answer is obvious).",
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**32 - 1, default=0)
    images = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=10_000,
        help_text="Source image ids (default: the sources of the campaign's deid pairs).",
    )


class CampaignViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
    mixins.UpdateModelMixin, viewsets.GenericViewSet,
):
    """Campaigns (staff only)."""

    queryset = Campaign.objects.all().order_by("-created")
    serializer_class = CampaignSerializer
    permission_classes = [RolePermission]
    action_perms = {
        "pairs": ["ratings.add_pair"], "gold_pairs": ["ratings.add_pair"],
        "labels": ["ratings.view_pairlabel"],
        "recompute": ["ratings.change_pairlabel"],
        "export": lambda view: [
            "ratings.view_judgment" if view.kwargs.get("what") == "judgments"
            else "ratings.view_pairlabel"
        ],
    }

    def finalize_response(self, request: Request, response: Any, *args: Any,
                          **kwargs: Any) -> Any:
        # An export's error (404, 403) is JSON whatever the client accepted: through the
        # pass-through renderer it came out as the literal body "errors", type */*.
        if self.action == "export" and isinstance(response, Response):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    # A campaign that asks for qualification, gold or attention checks gets its known-answer
    # pairs made from its own sources whenever it is saved or given pairs (only the shortfall).
    def perform_create(self, serializer: Any) -> None:
        ensure_known_answer_pairs(serializer.save())

    def perform_update(self, serializer: Any) -> None:
        ensure_known_answer_pairs(serializer.save())

    @extend_schema(request=PairBulkSerializer, responses={201: PairOutSerializer(many=True)})
    @action(detail=True, methods=["post"], url_path="pairs")
    def pairs(self, request: Request, pk: str | None = None) -> Response:
        """Bulk-create pairs (all or nothing); then the campaign's missing gold and attention
        pairs are made from its sources."""
        campaign = self.get_object()
        body = PairBulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        pairs = services.create_pairs(campaign, body.validated_data["pairs"])
        ensure_known_answer_pairs(campaign)
        return Response(PairOutSerializer(pairs, many=True).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GoldPairsSerializer, responses={201: PairOutSerializer(many=True)})
    @action(detail=True, methods=["post"], url_path="gold-pairs")
    def gold_pairs(self, request: Request, pk: str | None = None) -> Response:
        """Add known-answer pairs: a source against a jittered copy (gold_same), two subjects
        (gold_different), a source twice (attention); from ``images`` or else the
        campaign's deid sources."""
        campaign = self.get_object()
        body = GoldPairsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        d = body.validated_data
        pairs = add_gold_pairs(
            campaign, d.get("images") or None, n_same=d["n_same"], n_different=d["n_different"],
            n_attention=d["n_attention"], seed=d["seed"],
        )
        return Response(PairOutSerializer(pairs, many=True).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: PairLabelSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="labels")
    def labels(self, request: Request, pk: str | None = None) -> Response:
        """Aggregated human score-A per pair."""
        campaign = self.get_object()
        qs = PairLabel.objects.filter(pair__campaign=campaign).select_related("pair").order_by("pair_id")
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(PairLabelSerializer(page, many=True).data)

    @extend_schema(request=RecomputeSerializer, responses={202: QueuedSerializer})
    @action(detail=True, methods=["post"], url_path="recompute")
    def recompute(self, request: Request, pk: str | None = None) -> Response:
        """Recompute labels now, on the cpu queue."""
        campaign = self.get_object()
        body = RecomputeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = update_campaign_labels_task.delay(campaign.pk, method=body.validated_data["method"])
        return Response({"status": "queued", "task": result.id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            OpenApiParameter("what", str, OpenApiParameter.PATH, enum=["judgments", "labels"]),
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=["csv", "jsonl"]),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR,
                   (200, "application/x-ndjson"): OpenApiTypes.STR},
    )
    @action(
        detail=True, methods=["get"], renderer_classes=[PassthroughRenderer, JSONRenderer],
        url_path=r"exports/(?P<what>judgments|labels)/(?P<fmt>csv|jsonl)",
    )
    def export(self, request: Request, pk: str | None = None, what: str = "judgments",
               fmt: str = "csv") -> StreamingHttpResponse:
        """Stream every judgment (blocked raters included, flagged) or every label."""
        campaign = self.get_object()
        if what == "judgments":
            rows, fields = selectors.iter_judgment_rows(campaign.pk), selectors.JUDGMENT_FIELDS
        else:
            rows, fields = selectors.iter_label_rows(campaign.pk), selectors.LABEL_FIELDS
        content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(_stream(rows, fields, fmt), content_type=content_type)
        # Neutral file name: the campaign's number, nothing about people.
        response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-{what}.{fmt}"'
        response["Cache-Control"] = "private, no-store"
        return response


# --- Raters ----------------------------------------------------------------------------------


class CsrfAlwaysSession(SessionAuthentication):
    """Session auth that enforces CSRF for anonymous (external) raters too.

    DRF checks CSRF only for logged-in users; external raters are identified by their
    session alone, so their POSTs need the same protection.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        self.enforce_csrf(request)
        return super().authenticate(request)


class CsrfAlwaysSessionScheme(SessionScheme):
    target_class = "ratings.api.CsrfAlwaysSession"
    name = "raterSession"


class RaterView(APIView):
    authentication_classes = [CsrfAlwaysSession]
    permission_classes = [AllowAny]  # the rater comes from the session, checked below

    def rater(self, request: Request, slug: str) -> tuple[Campaign, Rater]:
        """The campaign and the session's rater in it; 403 JSON without one."""
        raters = request.session.get(SESSION_KEY, {})
        rater = selectors.rater_by_slug(slug, raters.get(slug))
        if rater is None:
            campaign = get_object_or_404(Campaign.objects.exclude(status="draft"), slug=slug)
            rater = session_rater(request, campaign)
        if rater is None:
            raise RatingError(NOT_A_RATER, "Open the study link first.", field="rater")
        if not binding.rater_ok(request, rater):
            raise RatingError(NOT_THIS_BROWSER, "This participant is bound to another browser.",
                              field="rater")
        return rater.campaign, rater


def _progress(rater: Rater, campaign: Campaign) -> dict[str, Any]:
    return vars(selectors.rater_progress(rater, campaign))


def next_body(campaign: Campaign, rater: Rater,
              result: services.NextResult | None = None) -> dict[str, Any]:
    """Next-assignment answer; raises 403 JSON for blocked or not-consented raters."""
    if result is None:
        result = services.next_assignments(rater.pk, campaign_id=campaign.pk)
    if result.status in (BLOCKED, CONSENT_REQUIRED):  # the NextResult statuses are the codes
        raise RatingError(result.status, "See the study page.", field="rater")
    rater = result.rater or rater
    items = []
    for a in result.assignments:
        a.rater = rater
        items.append({
            "id": a.public_id, "phase": a.phase, "expires": a.expires,
            "left_url": reverse("ratings:image", args=[selectors.image_token(a, "left")]),
            "right_url": reverse("ratings:image", args=[selectors.image_token(a, "right")]),
        })
    status_name = result.status
    if status_name == "no_work" and not rater.qualified and rater.gold_count:
        status_name = "qualifying_wait"
    return {
        "status": status_name, "assignments": items, "progress": _progress(rater, campaign),
        "end_url": reverse("ratings:done", args=[campaign.slug]),
    }


class NextAssignmentView(RaterView):
    @extend_schema(request=None, responses={200: NextSerializer}, operation_id="ratings_next")
    def post(self, request: Request, slug: str) -> Response:
        """The rater's open assignments (the current one first, then one to preload).

        Creates holds, hence POST. Images come as signed URLs valid for a few minutes.
        """
        campaign, rater = self.rater(request, slug)
        return Response(NextSerializer(next_body(campaign, rater)).data)


class SubmitJudgmentView(RaterView):
    @extend_schema(request=JudgmentInSerializer,
                   responses={201: JudgmentOutSerializer, 200: JudgmentOutSerializer,
                              403: OpenApiResponse(description="blocked or not this rater"),
                              404: OpenApiResponse(description="no such assignment (for you)"),
                              409: OpenApiResponse(description="expired or judged differently")},
                   operation_id="ratings_submit_judgment")
    def post(self, request: Request, slug: str, assignment: uuid.UUID) -> Response:
        """Record a judgment. Idempotent: a retried POST returns 200 and changes nothing.

        The answer carries ``next`` (as from the next endpoint), saving the page a round
        trip; it is null when the rater was just blocked.
        """
        campaign, rater = self.rater(request, slug)
        body = JudgmentInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.submit_judgment(
            rater.pk, assignment, **body.validated_data,
            then_next=services.DEFAULT_HOLDS, campaign_id=campaign.pk,
        )
        blocked = result.rater.blocked
        out = {
            "status": "recorded" if result.created else "duplicate",
            "rater_status": "blocked" if blocked else "ok",
            "too_fast": result.judgment.too_fast,
            "progress": _progress(result.rater, campaign),
            "next": None if blocked or result.next is None
            else next_body(campaign, result.rater, result.next),
        }
        return Response(JudgmentOutSerializer(out).data,
                        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


# --- The hot path: same URLs, same JSON, one SQL statement (ratings/hotpath.py) ------------


def _with_hot_path(view_cls: type[RaterView], fast: Any) -> Any:
    """The DRF view, answered by ``fast`` first on PostgreSQL; ``fast`` returns None for
    anything but the common case (nothing written), and the DRF view answers then.

    The DRF view stays the reference: validation, errors, CSRF refusals, OpenAPI (the
    wrapper carries ``cls``/``initkwargs``, so drf-spectacular documents it as before).
    CSRF: the wrapper is exempt from the middleware like every DRF view; ``fast`` makes
    the same check as ``CsrfAlwaysSession`` and leaves failures to the DRF view.
    """
    drf_view = view_cls.as_view()

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            wait = _throttle(request, kwargs["slug"])
            if wait:
                return _throttled(wait)
        if request.method == "POST" and hotpath.available():
            response = fast(request, **kwargs)
            if response is not None:
                return response
        return drf_view(request, **kwargs)

    view.cls = drf_view.cls  # type: ignore[attr-defined]
    view.initkwargs = drf_view.initkwargs  # type: ignore[attr-defined]
    view.__doc__ = view_cls.__doc__
    return view


def _throttle(request: HttpRequest, slug: str) -> int | None:
    """Rate limits of next and submit, both paths, one cache round trip: per session
    rater (no query: the session's id) and per client IP. The wait, or None."""
    rater_hex = hotpath.session_rater_hex(request, slug, SESSION_KEY) or "none"
    return throttle.hit([
        ("act-rater", rater_hex, settings.RATE_LIMIT_ACTIONS_PER_RATER),
        ("act-ip", throttle.client_ip(request), settings.RATE_LIMIT_ACTIONS_PER_IP),
    ])


def _throttled(wait: int) -> HttpResponse:
    """429 as DRF's Throttled comes out of the exception handler, with Retry-After."""
    response = hotpath.json_response({"errors": [{
        "field": "non_field_errors", "code": "throttled",
        "detail": f"Request was throttled. Expected available in {wait} seconds.",
    }]}, 429)
    response["Retry-After"] = str(wait)
    return response


def _fast_next(request: HttpRequest, slug: str) -> HttpResponse | None:
    rater_hex = hotpath.session_rater_hex(request, slug, SESSION_KEY)
    if rater_hex is None or not binding.session_ok(request, slug) or not hotpath.csrf_ok(request):
        return None
    return hotpath.next_reply(slug, rater_hex)


def _fast_submit(request: HttpRequest, slug: str, assignment: uuid.UUID) -> HttpResponse | None:
    rater_hex = hotpath.session_rater_hex(request, slug, SESSION_KEY)
    if rater_hex is None or not binding.session_ok(request, slug):
        return None
    judgment = hotpath.parse_judgment(request)
    if judgment is None or not hotpath.csrf_ok(request):
        return None
    return hotpath.submit_reply(slug, rater_hex, assignment, judgment)


next_assignment_view = _with_hot_path(NextAssignmentView, _fast_next)
submit_judgment_view = _with_hot_path(SubmitJudgmentView, _fast_submit)
