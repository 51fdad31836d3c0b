"""Labels: the debounced queueing of a recomputation, and the recomputation itself."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from deidplatform.celery import UPDATE_CAMPAIGN_LABELS, enqueue_on_commit, send_now

from .. import aggregation, selectors
from ..locking import lock_label_update
from ..models import Campaign, PairLabel, Rater


def queue_label_update(campaign_id: int) -> None:
    """Queue ``ratings.tasks.update_campaign_labels`` on commit. By name: ratings.tasks
    imports services, so importing it back (even lazily) would close a circle."""
    enqueue_on_commit(UPDATE_CAMPAIGN_LABELS, campaign_id)


def mark_labels_pending(campaign_id: int) -> None:
    """Debounce: one label update is queued per burst of judgments, not one per judgment.

    The UPDATE matches no row while an update is already pending, so it takes no lock then.
    """
    if Campaign.objects.filter(pk=campaign_id, labels_pending=False).update(labels_pending=True):
        queue_label_update(campaign_id)


def requeue_stuck_label_updates(now=None) -> int:
    """Re-send the label update of campaigns left ``labels_pending`` (its send failed, or
    the message was lost) with no update for ``DEID_LABELS_STALE_S``. A duplicate of an
    update still in the queue only recomputes once more (idempotent)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.DEID_LABELS_STALE_S)
    stuck = list(
        Campaign.objects.filter(labels_pending=True)
        .annotate(last=Coalesce("labels_updated", "created")).filter(last__lt=cutoff)
        .values_list("pk", flat=True)
    )
    return sum(send_now(UPDATE_CAMPAIGN_LABELS, pk) for pk in stuck)


def recompute_labels(
    campaign_id: int, method: str = PairLabel.Method.DAWID_SKENE
) -> dict[str, Any]:
    """Aggregate judgments of raters in good standing into PairLabels, reliabilities and α."""
    Campaign.objects.filter(pk=campaign_id).update(labels_pending=False)
    with transaction.atomic():
        lock_label_update(campaign_id)  # one recomputation of a campaign at a time
        rows = selectors.judgment_triples(campaign_id)
        result = aggregation.aggregate(rows, method=method)
        now = timezone.now()
        counts = dict(
            selectors.label_judgments(campaign_id)  # the same judgments the labels come from
            .values_list("pair_id").annotate(n=Count("pk")).values_list("pair_id", "n")
        )
        existing = {pl.pair_id: pl for pl in PairLabel.objects.filter(pair__campaign_id=campaign_id)}
        new, changed = [], []
        for pair_id, score in result.score_a.items():
            label = existing.pop(pair_id, None) or PairLabel(pair_id=pair_id)
            label.score_a, label.same = float(score), bool(score >= 0.5)
            label.n_judgments, label.method, label.updated = counts.get(pair_id, 0), method, now
            (changed if label.pk else new).append(label)
        PairLabel.objects.bulk_create(new, batch_size=1000)
        PairLabel.objects.bulk_update(
            changed, ["score_a", "same", "n_judgments", "method", "updated"], batch_size=1000
        )
        if existing:  # pairs whose only judgments came from raters now blocked
            PairLabel.objects.filter(pk__in=[pl.pk for pl in existing.values()]).delete()
        # Too-fast answers feed the reliability: taken as guesses (aggregation.pace_adjusted).
        pace = {
            rid: (n, fast) for rid, n, fast in selectors.label_judgments(campaign_id)
            .values("rater_id").annotate(n=Count("pk"), fast=Count("pk", filter=Q(too_fast=True)))
            .values_list("rater_id", "n", "fast")
        }
        # Rater rows are locked one statement at a time in ascending id (locking.py order)
        # and only where the value changed; the campaign row is written last.
        for r in Rater.objects.filter(campaign_id=campaign_id).order_by("pk").only("reliability"):
            value = aggregation.pace_adjusted(result.reliability.get(r.pk), *pace.get(r.pk, (0, 0)))
            if value != r.reliability:
                Rater.objects.filter(pk=r.pk).update(reliability=value)
        Campaign.objects.filter(pk=campaign_id).update(
            krippendorff_alpha=result.alpha, labels_updated=now
        )
    return {"labels": len(result.score_a), "alpha": result.alpha, "method": method}
