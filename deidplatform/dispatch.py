"""The sweeper's one rule for work rows (de-identification jobs, training runs): re-send
what the broker never took or lost, and re-queue what stopped beating.

A work model has ``status`` (with ``Status.QUEUED`` / ``Status.RUNNING``), ``created``,
``started``, ``dispatched``, ``heartbeat`` and ``claim``. A duplicate delivery is refused
by the claim the runner takes, so re-sending is always safe.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .celery import enqueue_on_commit, send_now

log = logging.getLogger(__name__)


def _stamp_dispatched(model: Any, pk: Any) -> None:
    model.objects.filter(pk=pk).update(dispatched=timezone.now())


def enqueue_work(row: Any, task_name: str) -> None:
    """Send ``task_name`` for a work row once this transaction commits; the row is stamped
    ``dispatched`` only after the broker took it (unstamped rows are the sweeper's)."""
    model, pk = type(row), row.pk
    enqueue_on_commit(task_name, str(pk), on_sent=lambda: _stamp_dispatched(model, pk))


def silent_since(t: datetime) -> Q:
    """No sign of life since ``t``: the last heartbeat, else the start, else the creation."""
    return (
        Q(heartbeat__lt=t) | Q(heartbeat__isnull=True, started__lt=t)
        | Q(heartbeat__isnull=True, started__isnull=True, created__lt=t)
    )


def sweep_stale(model: Any, task_name: str, noun: str, now: datetime | None = None) -> tuple[int, int, int]:
    """(re-sent queued rows, re-queued silent rows, messages sent) for one work model."""
    now = now or timezone.now()
    unsent = Q(dispatched__isnull=True,
               created__lt=now - timedelta(seconds=settings.DEID_DISPATCH_GRACE_S))
    lost = Q(dispatched__lt=now - timedelta(seconds=settings.DEID_REDISPATCH_S))
    queued = list(
        model.objects.filter(unsent | lost, status=model.Status.QUEUED).values_list("pk", flat=True)
    )
    stale = now - timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S)
    silent = model.objects.filter(silent_since(stale), status=model.Status.RUNNING)
    dead = []
    for pk in silent.values_list("pk", flat=True):
        # Conditional: a row that beat (or finished) since the read above is left alone.
        if silent.filter(pk=pk).update(status=model.Status.QUEUED, claim=None):
            log.warning("%s %s: heartbeat stale, re-queued", noun, pk)
            dead.append(pk)
    sent = 0
    for pk in [*queued, *dead]:
        if send_now(task_name, str(pk)):
            _stamp_dispatched(model, pk)
            sent += 1
    return len(queued), len(dead), sent
