"""Dashboard pages: thin views over ``selectors`` (reads), ``services`` (actions) and
``plots`` (SVG). Every view needs a staff account holding the model permissions of what it
shows or does (deidplatform.permissions); anonymous users are sent to sign in."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from deidplatform.errors import AppError
from deidplatform.permissions import has_perms
from models_app.faces.models import FaceImage
from models_app.faces.serving import VARIANTS, private_file_response
from models_app.jobs.models import SUCCEEDED_COUNT_LABEL, DeidJob
from models_app.rounds.models import Round
from models_app.training.models import ModelKind, ModelVersion
from ratings.models import Campaign, Rater

from . import plots, probes, selectors, services

# Job statuses as the pages label them: "succeeded" never alone (a proxy's verdict).
JOB_STATUS_LABELS = [(v, SUCCEEDED_COUNT_LABEL if v == DeidJob.Status.SUCCEEDED else label)
                     for v, label in DeidJob.Status.choices]

T = TypeVar("T")

PAGE_SIZE = 50
GALLERY_SIZE = 24

V_ROUND, V_JOB, V_VERSION = ("models_app.view_round", "models_app.view_deidjob",
                             "models_app.view_modelversion")
V_CAMPAIGN, V_RATER, V_FACE = "ratings.view_campaign", "ratings.view_rater", "models_app.view_faceimage"
OVERVIEW = [V_ROUND, V_JOB, V_VERSION, V_CAMPAIGN]


def staff_only(*perms: str) -> Callable:
    """Signed out: to the sign-in page. Signed in without staff and ``perms``: 403."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_perms(request.user, perms):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def _refused(request: HttpRequest, exc: AppError) -> None:
    messages.error(request, f"Refused: {exc.detail}")


# --- Overview ---------------------------------------------------------------------------------


def _progress_row(p: selectors.CampaignProgress) -> dict[str, Any]:
    from .templatetags.dashboard import duration

    return {"pairs_done": p.pairs_done, "pairs": p.pairs, "counted": p.counted,
            "wanted": p.wanted, "percent": f"{p.percent:.0f} %", "per_hour": p.per_hour,
            "active": p.active_raters, "blocked": p.blocked_raters,
            "eta": duration(p.eta) if p.eta else ("done" if p.wanted and p.counted >= p.wanted
                                                  else "–")}


def _overview_live() -> dict[str, str]:
    """What the overview refreshes in place: flat keys to text."""
    out: dict[str, str] = {}
    for rnd in selectors.running_rounds():
        out[f"round-{rnd.pk}-stage"] = rnd.get_stage_display()
    for p in selectors.campaign_progress(selectors.live_campaigns()):
        for key, value in _progress_row(p).items():
            out[f"campaign-{p.campaign.pk}-{key}"] = str(value)
    for status, n in selectors.job_status_counts().items():
        out[f"jobs-{status}"] = str(n)
    return out


@require_GET
@staff_only(*OVERVIEW)
def overview(request: HttpRequest) -> HttpResponse:
    progress = selectors.campaign_progress(selectors.live_campaigns())
    recent = selectors.recent_rounds()
    proxy = selectors.promoted_proxy()
    context = {
        "rounds": selectors.running_rounds(),
        "campaigns": [(p, _progress_row(p)) for p in progress],
        "jobs": selectors.job_status_counts(),
        "job_statuses": JOB_STATUS_LABELS,
        "proxy": proxy,
        "proxy_metrics": ((proxy.metrics or {}).get("held_out") or {}) if proxy else {},
        "recent": recent,
        "success_plot": plots.success_rates(
            [f"{r.series}#{r.number}" for r in recent],
            [selectors.success_rate(r) for r in recent]),
        "audit": selectors.recent_audit(),
        "queues": probes.QUEUES,
        "live_url": reverse("dashboard:live-overview"),
    }
    return render(request, "dashboard/overview.html", context)


@require_GET
@staff_only(*OVERVIEW)
def live_overview(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_overview_live())


@require_GET
@staff_only(*OVERVIEW)
def live_celery(request: HttpRequest) -> JsonResponse:
    """Queue depths and workers ("unknown" when the broker or the workers do not answer)."""
    status = probes.celery_status()
    workers = status["workers"]
    out: dict[str, str] = {}
    for queue, depth in status["queues"].items():
        out[f"queue-{queue}-depth"] = "unknown" if depth is None else str(depth)
        out[f"queue-{queue}-running"] = (
            "unknown" if workers is None else str(workers["running"].get(queue, 0)))
    out["workers-alive"] = "unknown" if workers is None else str(len(workers["alive"]))
    out["workers-names"] = "" if workers is None else ", ".join(workers["alive"])
    return JsonResponse(out)


# --- Rounds -----------------------------------------------------------------------------------


def _round_live(rnd: Round) -> dict[str, str]:
    out = {"round-stage": rnd.get_stage_display(), "round-status": rnd.get_status_display()}
    for status, n in selectors.round_jobs(rnd).items():
        out[f"round-jobs-{status}"] = str(n)
    if rnd.campaign is not None:
        p = selectors.campaign_progress([rnd.campaign])[0]
        for key, value in _progress_row(p).items():
            out[f"campaign-{rnd.campaign_id}-{key}"] = str(value)
    return out


def _or_404(get: Callable[[Any], T], key: Any) -> T:
    """``get(key)`` (a selector's detail lookup), or 404 when no such row exists."""
    try:
        return get(key)
    except ObjectDoesNotExist as exc:
        raise Http404 from exc


@require_GET
@staff_only(V_ROUND, V_CAMPAIGN)
def round_page(request: HttpRequest, round_id: uuid.UUID) -> HttpResponse:
    rnd = _or_404(selectors.round_detail, round_id)
    report = rnd.report or {}
    times = rnd.stage_times or {}  # jsonb keeps no key order: the stages' own order
    stage_seconds = {s.value: times[s.value].get("seconds") for s in Round.ORDER if s.value in times}
    plot = plots.round_report(report.get("points") or {}, {k: v for k, v in stage_seconds.items()
                                                           if v is not None},
                              bool((report.get("crowd") or {}).get("simulated")))
    progress = selectors.campaign_progress([rnd.campaign])[0] if rnd.campaign else None
    context = {
        "rnd": rnd, "report": report, "plot": plot,
        "stages": [(s, times.get(s.value) or {}) for s in Round.ORDER],
        "jobs": selectors.round_jobs(rnd), "job_statuses": JOB_STATUS_LABELS,
        "progress": progress, "progress_row": _progress_row(progress) if progress else None,
        "report_json": json.dumps({k: v for k, v in report.items() if k != "points"},
                                  indent=1, default=str) if report else "",
        "live_url": reverse("dashboard:live-round", args=[rnd.pk]),
    }
    return render(request, "dashboard/round.html", context)


@require_GET
@staff_only(V_ROUND, V_CAMPAIGN)
def live_round(request: HttpRequest, round_id: uuid.UUID) -> JsonResponse:
    rnd = _or_404(selectors.round_detail, round_id)
    return JsonResponse(_round_live(rnd))


@require_http_methods(["GET", "POST"])
@staff_only(V_ROUND, "models_app.add_round")
def start_round(request: HttpRequest) -> HttpResponse:
    """GET: the form; POST: start a round (the beat task advances it)."""
    if request.method == "POST":
        try:
            faces = int(request.POST.get("faces") or 0)
        except ValueError:
            faces = 0
        config: dict[str, Any] = {}
        if faces:
            config["faces"] = faces
        try:
            config.update(json.loads(request.POST.get("config") or "{}"))
        except (ValueError, TypeError):
            messages.error(request, "Refused: config is not valid JSON.")
            return redirect("dashboard:start-round")
        try:
            rnd = services.start_round(request.user, series=request.POST.get("series", ""),
                                       config=config)
        except AppError as exc:
            _refused(request, exc)
            return redirect("dashboard:start-round")
        messages.success(request, f"Round {rnd.series}#{rnd.number} started.")
        return redirect("dashboard:round", round_id=rnd.pk)
    return render(request, "dashboard/start_round.html", {})


# --- Jobs -------------------------------------------------------------------------------------


@require_GET
@staff_only(V_JOB)
def job_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    stop_reason = request.GET.get("stop_reason", "")
    round_id = request.GET.get("round", "")
    try:
        round_id = str(uuid.UUID(round_id)) if round_id else ""
    except ValueError:
        round_id = ""
    qs = selectors.job_list(status=status, stop_reason=stop_reason, round_id=round_id)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page, "status": status, "stop_reason": stop_reason, "round_id": round_id,
        "statuses": JOB_STATUS_LABELS, "stop_reasons": selectors.stop_reasons(),
        "rounds": selectors.rounds_for_filter(), "query": query.urlencode(),
    }
    return render(request, "dashboard/jobs.html", context)


@require_GET
@staff_only(V_JOB, V_FACE)
def gallery(request: HttpRequest) -> HttpResponse:
    """A batch of jobs (a round's, or the newest) as source/output pairs."""
    round_id = request.GET.get("round", "")
    try:
        round_id = str(uuid.UUID(round_id)) if round_id else ""
    except ValueError:
        round_id = ""
    qs = selectors.job_list(status=request.GET.get("status", ""), round_id=round_id)
    page = Paginator(qs, GALLERY_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "dashboard/gallery.html",
                  {"page": page, "round_id": round_id, "query": query.urlencode(),
                   "rounds": selectors.rounds_for_filter()})


@require_GET
@staff_only(V_JOB, V_FACE)
def job_page(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _or_404(selectors.job_detail, job_id)
    traj = selectors.job_trajectory(job)
    tau_a, tau_b = selectors.job_thresholds(job)
    rnd = getattr(job.batch, "round", None) if job.batch_id else None
    context = {
        "job": job, "rnd": rnd, "tau_a": tau_a, "tau_b": tau_b,
        "score_plot": plots.scores(traj["index"], traj["score_a"], traj["score_b"], tau_a, tau_b),
        "loss_plot": plots.lines(traj["index"], traj["terms"], "loss terms per iteration",
                                 xlabel="iteration"),
        "last_loss": traj["last_loss"], "n_iterations": len(traj["index"]),
        "ladder": sorted(job.ladder or [], key=lambda r: -float(r.get("threshold", 0))),
        "cancellable": job.status in DeidJob.ACTIVE,
    }
    return render(request, "dashboard/job.html", context)


@require_POST
@staff_only(V_JOB, "models_app.change_deidjob")
def cancel_job(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = get_object_or_404(DeidJob, pk=job_id)
    try:
        services.cancel_job(request.user, job)
        messages.success(request, "Job cancelled.")
    except AppError as exc:
        _refused(request, exc)
    return redirect("dashboard:job", job_id=job.pk)


# --- Images -----------------------------------------------------------------------------------


@require_GET
@staff_only(V_FACE)
def image(request: HttpRequest, image_id: uuid.UUID, variant: str) -> FileResponse:
    """A face file for the dashboard: staff with the view permission, by its opaque id."""
    if variant not in VARIANTS:
        raise Http404
    return private_file_response(get_object_or_404(FaceImage, pk=image_id), variant)


# --- Campaigns --------------------------------------------------------------------------------


@require_GET
@staff_only(V_CAMPAIGN, V_RATER)
def campaign_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    progress = selectors.campaign_progress([campaign])[0]
    times, counts = selectors.judgments_over_time(campaign)
    edges, hist = selectors.label_histogram(campaign)
    page = Paginator(selectors.campaign_raters(campaign), PAGE_SIZE).get_page(
        request.GET.get("page"))
    medians = selectors.median_response_ms([r.pk for r in page])
    mix = selectors.judgment_mix(campaign)
    context = {
        "campaign": campaign, "progress": progress, "progress_row": _progress_row(progress),
        "round": selectors.campaign_round(campaign),
        "progress_plot": plots.cumulative(times, counts, "judgments over time", "judgments"),
        "label_plot": plots.histogram(edges, hist, "label distribution",
                                      "crowd score-A (Dawid–Skene)"),
        "page": page, "raters": [(r, medians.get(r.pk)) for r in page],
        "mix": mix, "simulated_share": mix["simulated"] / mix["total"] if mix["total"] else None,
        "exports": [(what, fmt) for what in ("judgments", "labels") for fmt in ("csv", "jsonl")],
    }
    return render(request, "dashboard/campaign.html", context)


def _rater_action(request: HttpRequest, campaign_id: int, rater_id: int, act: Callable) -> HttpResponse:
    rater = get_object_or_404(Rater, pk=rater_id, campaign_id=campaign_id)
    try:
        act(request.user, rater)
        messages.success(request, f"Rater {rater.pk}: done.")
    except AppError as exc:
        _refused(request, exc)
    return redirect(reverse("dashboard:campaign", args=[campaign_id]) + "#raters")


@require_POST
@staff_only(V_CAMPAIGN, V_RATER, "ratings.change_campaign")
def block_rater(request: HttpRequest, campaign_id: int, rater_id: int) -> HttpResponse:
    return _rater_action(request, campaign_id, rater_id, services.block_rater)


@require_POST
@staff_only(V_CAMPAIGN, V_RATER, "ratings.change_campaign")
def unblock_rater(request: HttpRequest, campaign_id: int, rater_id: int) -> HttpResponse:
    return _rater_action(request, campaign_id, rater_id, services.unblock_rater)


# --- Proxy versions ---------------------------------------------------------------------------


@require_GET
@staff_only(V_VERSION)
def proxy_page(request: HttpRequest) -> HttpResponse:
    versions = selectors.proxy_versions()
    promoted = next((v for v in versions if v.status == ModelVersion.Status.PROMOTED), None)
    chosen = None
    if request.GET.get("version"):
        chosen = next((v for v in versions if str(v.pk) == request.GET["version"]), None)
    chosen = chosen or promoted or (versions[0] if versions else None)
    history = selectors.training_history(chosen) if chosen else []
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    curves = {k: [h.get(k) for h in history] for k in ("train_loss", "val_loss", "val_auc",
                                                       "val_brier")
              if any(h.get(k) is not None for h in history)}
    compare = [v for v in (promoted, chosen) if v is not None]
    context = {
        "versions": versions, "promoted": promoted, "chosen": chosen,
        "compare": list(dict.fromkeys(compare)),
        "curves_plot": plots.lines(epochs, curves, "training curves", xlabel="epoch"),
        "schedule": selectors.retraining_schedule(),
        "threshold": selectors.retrain_threshold(),
    }
    return render(request, "dashboard/proxy.html", context)


@require_http_methods(["GET", "POST"])
@staff_only(V_VERSION, "models_app.change_modelversion")
def promote(request: HttpRequest, version_id: uuid.UUID) -> HttpResponse:
    """GET: the confirmation; POST: promote (``force`` for a version that failed its gate)."""
    version = get_object_or_404(ModelVersion, pk=version_id, kind=ModelKind.HUMAN_PROXY)
    if request.method == "POST":
        try:
            v = services.promote_version(request.user, version,
                                         force=request.POST.get("force") == "on")
            messages.success(request, f"v{v.number} is promoted.")
        except AppError as exc:
            _refused(request, exc)
        return redirect("dashboard:proxy")
    current = selectors.promoted_proxy()
    return render(request, "dashboard/confirm.html", {
        "title": f"Promote v{version.number}?", "version": version, "current": current,
        "action": "promote", "needs_force": version.status == ModelVersion.Status.REJECTED,
    })


@require_http_methods(["GET", "POST"])
@staff_only(V_VERSION, "models_app.change_modelversion")
def rollback(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            v = services.rollback_proxy(request.user)
            messages.success(request, f"Rolled back: v{v.number} is promoted.")
        except AppError as exc:
            _refused(request, exc)
        return redirect("dashboard:proxy")
    return render(request, "dashboard/confirm.html", {
        "title": "Roll back the human proxy?", "current": selectors.promoted_proxy(),
        "action": "rollback",
    })
