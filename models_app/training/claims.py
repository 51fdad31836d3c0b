"""Claiming a training run for one attempt of its task, and acting only while it owns it.

Shared by the proxy runner (``runner``) and the generator runner (``generator_runner``), which
claim, own and fail a run the same way. It lives in its own module, not in ``runner``, because
``runner`` imports ``generator_runner`` (to dispatch a generator run sent under the proxy's
task name): ``generator_runner`` importing ``runner`` back would be an import cycle.

A delivery of a run's task claims it with a fresh ``claim`` uuid; every later write of that
attempt goes through ``owned(run)``, so it stops as soon as the run was cancelled or a later
attempt (the sweeper's redelivery after a stale heartbeat) took it over.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from .models import ModelKind, TrainingRun

log = logging.getLogger(__name__)


def claim_run(
    run_id: str, kind: ModelKind, *, keep_history: bool, claim: uuid.UUID | None = None
) -> TrainingRun | None:
    """Claim a queued (or orphaned running) run of ``kind`` for this attempt; None when it is
    of another kind, finished or cancelled, or owned by a live attempt (a duplicate delivery:
    a re-sent message, or one the broker redelivered after its visibility timeout).

    ``keep_history``: the attempt resumes (a generator, from its checkpoint), so the epochs
    recorded so far and the first start time are kept; otherwise it starts over with an empty
    history and a new start time.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.kind != kind or run.status not in TrainingRun.ACTIVE:
            return None
        now = timezone.now()
        fresh = now - timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S)
        if run.status == TrainingRun.Status.RUNNING and run.heartbeat and run.heartbeat >= fresh:
            log.info("%s run %s: owned by a live attempt, delivery dropped", run.kind, run_id)
            return None
        fields = ["status", "started", "heartbeat", "claim"]
        run.status = TrainingRun.Status.RUNNING
        run.heartbeat = now
        run.claim = claim or uuid.uuid4()
        if keep_history:
            run.started = run.started or now
        else:
            run.started = now
            run.history = []
            fields.append("history")
        run.save(update_fields=fields)
    return run


def owned(run: TrainingRun) -> models.QuerySet:
    """The run, as long as this attempt still owns it and it was not cancelled: an update
    through it returns 0 (writes nothing) once the attempt lost the run."""
    return TrainingRun.objects.filter(pk=run.pk, claim=run.claim, status=TrainingRun.Status.RUNNING)


def fail_run(run: TrainingRun, error: str) -> dict:
    """Mark the run failed (only while this attempt owns it); the task's result saying so."""
    owned(run).update(status=TrainingRun.Status.FAILED, error=error, finished=timezone.now())
    return {"run": str(run.pk), "status": "failed", "error": error}
