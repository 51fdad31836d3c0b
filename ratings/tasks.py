"""Celery tasks (queue ``cpu``): thin wrappers over services. Routes: deidplatform/celery.py.

Registered under their old wire names (beat rows and routes refer to them). Services never
import this module: they queue by name (``deidplatform.celery.enqueue_on_commit``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from deidplatform.celery import RECLAIM_EXPIRED_HOLDS, UPDATE_CAMPAIGN_LABELS

from .services import reclaim_expired_holds, recompute_labels


@shared_task(name=UPDATE_CAMPAIGN_LABELS)
def update_campaign_labels_task(campaign_id: int, method: str = "dawid_skene") -> dict[str, Any]:
    """Queued (debounced, on commit) as judgments arrive; operators can also run it."""
    return recompute_labels(campaign_id, method=method)


@shared_task(name=RECLAIM_EXPIRED_HOLDS)
def reclaim_expired_holds_task() -> int:
    """Periodic safety net; next-assignment also reclaims lazily."""
    total = 0
    while (n := reclaim_expired_holds()) > 0:
        total += n
    return total
