"""Celery tasks (queue ``cpu``): thin wrappers over services. Routes: deidplatform/celery.py."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="ratings.tasks.update_campaign_labels")
def update_campaign_labels(campaign_id: int, method: str = "dawid_skene") -> dict:
    """Queued (debounced, on commit) as judgments arrive; operators can also run it."""
    from .services import recompute_labels

    return recompute_labels(campaign_id, method=method)


@shared_task(name="ratings.tasks.reclaim_expired_holds")
def reclaim_expired_holds() -> int:
    """Periodic safety net; next-assignment also reclaims lazily."""
    from .services import reclaim_expired_holds as reclaim

    total = 0
    while (n := reclaim()) > 0:
        total += n
    return total
