"""Reads for the dashboard pages. Every function issues a fixed number of queries whatever
the number of rows (tests count them), so a page costs the same at 10 or 10,000 jobs."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, IntegerField, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Floor, Trunc
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from models_app.deid.config import DeidConfig
from models_app.jobs.models import DeidIteration, DeidJob
from models_app.rounds.models import Round
from models_app.training.models import ModelKind, ModelVersion
from ratings.models import Campaign, Judgment, Pair, PairLabel, Rater

from .models import AuditLog

RATE_WINDOW = timedelta(hours=1)
RETRAIN_TASK = "models_app.tasks.maybe_retrain"


# --- Campaign progress -----------------------------------------------------------------------


@dataclass
class CampaignProgress:
    """Pairs judged against pairs needed, and the pace: counted judgments are those of
    raters in good standing on active de-identification pairs, at most k per pair."""

    campaign: Campaign
    pairs: int = 0
    pairs_done: int = 0
    wanted: int = 0
    counted: int = 0
    per_hour: int = 0
    deid_per_hour: int = 0
    active_raters: int = 0
    blocked_raters: int = 0
    raters: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * self.counted / self.wanted if self.wanted else 0.0

    @property
    def eta(self) -> timedelta | None:
        """Time to completion at the last hour's pace (None: no pace, or done)."""
        left = self.wanted - self.counted
        if left <= 0 or not self.deid_per_hour:
            return None
        return timedelta(hours=left / self.deid_per_hour)


def campaign_progress(campaigns: list[Campaign], now: datetime | None = None
                      ) -> list[CampaignProgress]:
    """Progress of several campaigns in four queries."""
    now = now or timezone.now()
    out = {c.pk: CampaignProgress(campaign=c) for c in campaigns}
    if not out:
        return []
    ids = list(out)
    for cid, n in (Pair.objects.filter(campaign_id__in=ids, kind=Pair.Kind.DEID, active=True)
                   .values("campaign_id").annotate(n=Count("pk")).values_list("campaign_id", "n")):
        out[cid].pairs = n
        out[cid].wanted = n * out[cid].campaign.judgments_per_pair
    for cid, done, counted in _counted_per_campaign(ids):
        out[cid].pairs_done, out[cid].counted = int(done or 0), int(counted or 0)
    since = now - RATE_WINDOW
    for cid, n, n_deid, active in (
        Judgment.objects.filter(campaign_id__in=ids, created__gte=since)
        .values("campaign_id")
        .annotate(n=Count("pk"), n_deid=Count("pk", filter=Q(pair__kind=Pair.Kind.DEID)),
                  active=Count("rater_id", distinct=True))
        .values_list("campaign_id", "n", "n_deid", "active").order_by()
    ):
        out[cid].per_hour, out[cid].deid_per_hour, out[cid].active_raters = n, n_deid, active
    for cid, total, blocked in (
        Rater.objects.filter(campaign_id__in=ids).values("campaign_id")
        .annotate(total=Count("pk"), blocked=Count("pk", filter=Q(blocked=True)))
        .values_list("campaign_id", "total", "blocked").order_by()
    ):
        out[cid].raters, out[cid].blocked_raters = total, blocked
    return list(out.values())


def _counted_per_campaign(ids: list[int]) -> list[tuple[int, int, int]]:
    """(campaign, pairs with k counted judgments, counted judgments capped at k per pair),
    summed by the database over its per-pair counts: one row per campaign comes back, not
    one per pair (10,000 pairs cost ~15 ms more in Python)."""
    per_pair = (
        Judgment.objects.filter(campaign_id__in=ids, pair__kind=Pair.Kind.DEID,
                                pair__active=True, rater__blocked=False)
        .values("campaign_id", "pair_id").annotate(n=Count("pk")).order_by()
    )
    inner, params = per_pair.query.sql_with_params()
    table = Campaign._meta.db_table
    sql = (
        "SELECT s.campaign_id,"
        " SUM(CASE WHEN s.n >= c.judgments_per_pair THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN s.n >= c.judgments_per_pair THEN c.judgments_per_pair ELSE s.n END)"
        f" FROM ({inner}) s JOIN {connection.ops.quote_name(table)} c ON c.id = s.campaign_id"
        " GROUP BY s.campaign_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


# --- Overview ---------------------------------------------------------------------------------


def running_rounds() -> list[Round]:
    return list(Round.objects.filter(status=Round.Status.RUNNING)
                .select_related("campaign").order_by("created"))


def live_campaigns(limit: int = 20) -> list[Campaign]:
    return list(Campaign.objects.filter(
        status__in=[Campaign.Status.ACTIVE, Campaign.Status.PAUSED]).order_by("-created")[:limit])


def job_status_counts() -> dict[str, int]:
    return dict(DeidJob.objects.values_list("status").annotate(n=Count("pk"))
                .values_list("status", "n").order_by())


def promoted_proxy() -> ModelVersion | None:
    return (ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY,
                                        status=ModelVersion.Status.PROMOTED)
            .select_related("training_run").first())


def recent_rounds(limit: int = 12) -> list[Round]:
    """The last finished rounds, oldest first (for the success-rate plot)."""
    rows = list(Round.objects.filter(status=Round.Status.SUCCEEDED)
                .only("id", "series", "number", "report", "created").order_by("-created")[:limit])
    return rows[::-1]


def success_rate(rnd: Round) -> float | None:
    return ((rnd.report or {}).get("success") or {}).get("rate")


def recent_audit(limit: int = 10) -> list[AuditLog]:
    return list(AuditLog.objects.order_by("-created", "-id")[:limit])


# --- Rounds -----------------------------------------------------------------------------------


def round_detail(round_id: Any) -> Round:
    return Round.objects.select_related(
        "campaign", "training_run", "model_version", "proxy_before", "batch", "previous"
    ).get(pk=round_id)


def round_jobs(rnd: Round) -> dict[str, int]:
    if rnd.batch_id is None:
        return {}
    return dict(DeidJob.objects.filter(batch_id=rnd.batch_id).values_list("status")
                .annotate(n=Count("pk")).values_list("status", "n").order_by())


def rounds_for_filter(limit: int = 50) -> list[Round]:
    return list(Round.objects.only("id", "series", "number", "batch_id")
                .order_by("-created")[:limit])


# --- Jobs -------------------------------------------------------------------------------------


def job_list(status: str = "", stop_reason: str = "", round_id: str = "") -> QuerySet[DeidJob]:
    qs = DeidJob.objects.select_related("batch__round").only(
        "id", "status", "stop_reason", "iterations_done", "final_score_a", "final_score_b",
        "created", "finished", "output_id", "source_id", "batch_id",
        "batch__id", "batch__round__id", "batch__round__series", "batch__round__number",
    ).annotate(  # the success basis for each row's verdict, without loading final_detail
        success_basis=KeyTextTransform("success_basis", "final_detail"),
    ).order_by("-created", "-id")
    if status:
        qs = qs.filter(status=status)
    if stop_reason:
        qs = qs.filter(stop_reason=stop_reason)
    if round_id:
        qs = qs.filter(batch__round__id=round_id)
    return qs


def stop_reasons() -> list[str]:
    return sorted(r for r in DeidJob.objects.exclude(stop_reason="")
                  .values_list("stop_reason", flat=True).distinct().order_by() if r)


def job_detail(job_id: Any) -> DeidJob:
    return DeidJob.objects.select_related(
        "proxy_version", "current_proxy", "batch__round", "campaign"
    ).get(pk=job_id)


NOT_LOSS = {"success", "confirmed", "confirm_score_a", "saved_score_a", "saved_score_b",
            "score_b_min"}


def job_trajectory(job: DeidJob) -> dict[str, Any]:
    """Iterations, both scores, and every numeric loss term per iteration."""
    rows = list(DeidIteration.objects.filter(job=job).order_by("index")
                .values_list("index", "score_a", "score_b", "loss"))
    terms: dict[str, list[float | None]] = {}
    for i, (_, _, _, loss) in enumerate(rows):
        for key, value in (loss or {}).items():
            if key in NOT_LOSS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            terms.setdefault(key, [None] * len(rows))[i] = float(value)
    return {"index": [r[0] for r in rows], "score_a": [r[1] for r in rows],
            "score_b": [r[2] for r in rows], "terms": terms,
            "last_loss": rows[-1][3] if rows else {}}


def job_thresholds(job: DeidJob) -> tuple[float, float]:
    defaults = DeidConfig()
    params = job.params or {}
    return float(params.get("tau_a", defaults.tau_a)), float(params.get("tau_b", defaults.tau_b))


# --- Campaigns --------------------------------------------------------------------------------


def campaign_detail(campaign_id: int) -> Campaign:
    return Campaign.objects.get(pk=campaign_id)


def campaign_round(campaign: Campaign) -> Round | None:
    return Round.objects.filter(campaign=campaign).only("id", "series", "number").first()


def judgments_over_time(campaign: Campaign) -> tuple[list[datetime], list[int]]:
    rows = list(Judgment.objects.filter(campaign=campaign)
                .annotate(h=Trunc("created", "hour")).values("h").annotate(n=Count("pk"))
                .values_list("h", "n").order_by("h"))
    return [r[0] for r in rows], [r[1] for r in rows]


def label_histogram(campaign: Campaign, bins: int = 10) -> tuple[list[float], list[int]]:
    """Crowd score-A of the campaign's de-identification pairs, counted per bin by the
    database (a score of exactly 1 falls in the last bin)."""
    counts = [0] * bins
    for b, n in (PairLabel.objects.filter(pair__campaign=campaign, pair__kind=Pair.Kind.DEID)
                 .annotate(b=Cast(Floor(F("score_a") * bins), IntegerField()))
                 .values("b").annotate(n=Count("pk")).values_list("b", "n").order_by()):
        counts[min(max(int(b), 0), bins - 1)] += n
    return [i / bins for i in range(bins + 1)], counts


def judgment_mix(campaign: Campaign) -> dict[str, int]:
    return Judgment.objects.filter(campaign=campaign).aggregate(
        total=Count("pk"), simulated=Count("pk", filter=Q(rater__simulated=True)),
        too_fast=Count("pk", filter=Q(too_fast=True)),
    )


def campaign_raters(campaign: Campaign) -> QuerySet[Rater]:
    return Rater.objects.filter(campaign=campaign).only(
        "id", "public_id", "campaign_id", "source", "simulated", "qualified", "blocked",
        "blocked_reason", "reliability", "judgments_count", "gold_count", "gold_correct",
        "attention_count", "attention_failed", "too_fast_count", "finished_at",
    ).order_by("-judgments_count", "id")


class _Median(Aggregate):
    """PostgreSQL's ``percentile_cont(0.5) WITHIN GROUP (ORDER BY …)``."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def median_response_ms(rater_ids: list[int]) -> dict[int, float]:
    """Median response time per rater, one query (the database's percentile on PostgreSQL;
    elsewhere the times come back and Python takes the median)."""
    if not rater_ids:
        return {}
    qs = Judgment.objects.filter(rater_id__in=rater_ids)
    if connection.vendor == "postgresql":
        return dict(qs.values("rater_id").annotate(m=_Median("response_ms"))
                    .values_list("rater_id", "m").order_by())
    times: dict[int, list[int]] = {}
    for rid, ms in qs.values_list("rater_id", "response_ms"):
        times.setdefault(rid, []).append(ms)
    return {rid: float(statistics.median(v)) for rid, v in times.items()}


# --- Proxy versions ---------------------------------------------------------------------------


def proxy_versions() -> list[ModelVersion]:
    return list(ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY)
                .select_related("training_run")
                .defer("config", "training_run__data_snapshot", "training_run__config",
                       "training_run__history")
                .order_by("-number"))


def training_history(version: ModelVersion) -> list[dict[str, Any]]:
    if version.training_run_id is None:
        return []
    from models_app.training.models import TrainingRun

    return (TrainingRun.objects.filter(pk=version.training_run_id)
            .values_list("history", flat=True).first()) or []


def retraining_schedule(now: datetime | None = None) -> list[dict[str, Any]]:
    """The beat schedules that retrain the proxy, with their next run."""
    now = now or timezone.now()
    out = []
    for task in (PeriodicTask.objects.filter(task=RETRAIN_TASK)
                 .select_related("interval", "crontab", "solar", "clocked").order_by("name")):
        next_run = None
        if task.enabled:
            try:
                last = task.last_run_at or task.start_time or task.date_changed or now
                # Time left from now until the first run due after ``last`` (overdue: now).
                next_run = now + max(task.schedule.remaining_estimate(last), timedelta(0))
            except Exception:  # an odd schedule row must not break the page
                next_run = None
        out.append({"name": task.name, "enabled": task.enabled,
                    "schedule": str(task.interval or task.crontab or task.solar or task.clocked),
                    "last_run": task.last_run_at, "next_run": next_run, "id": task.pk})
    return out


def retrain_threshold() -> int:
    return int(settings.DEID_RETRAIN_MIN_NEW_LABELS)
