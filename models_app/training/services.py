"""Services of training runs: request one, retrain when new labels arrived (writes only).

Flow: ``request_training_run`` stores a queued ``TrainingRun`` and sends the
``train_proxy`` task to the gpu queue on commit; the worker runs
``training.runner.execute_training_run``. A send that failed (broker down) leaves
``dispatched`` null; ``sweep_runs`` (every minute) sends it again, and re-queues a running run
whose worker stopped beating.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deidplatform.celery import TRAIN_GENERATOR, TRAIN_PROXY, require_broker
from deidplatform.dispatch import enqueue_work, sweep_stale
from deidplatform.errors import INVALID, AppError

from . import errors, selectors
from .models import ModelKind, TrainingRun

log = logging.getLogger(__name__)

# Defaults of a run; an operator's ``config`` overrides any of them.
RUN_DEFAULTS: dict[str, Any] = {
    "natural_same": 1000,  # natural pairs mixed in (claims: people know these well)
    "natural_different": 1000,
    "seed": 0,
    "warm_start": True,  # start from the promoted version's weights
    "auto_promote": True,  # promote when the gate passes
    "gate_tolerance": 0.0,
    "train": {},  # models_app.proxy.train.TrainConfig fields (stop rules under "stop")
}


def request_training_run(
    *, trigger: str = TrainingRun.Trigger.MANUAL, config: dict[str, Any] | None = None
) -> TrainingRun:
    """Queue one run; refuses a second while one is queued or running, and refuses (503)
    while the broker is unreachable, before storing anything."""
    return _queue_run(ModelKind.HUMAN_PROXY, TRAIN_PROXY, "Training run", trigger, config)


def request_generator_run(
    *, trigger: str = TrainingRun.Trigger.MANUAL, config: dict[str, Any] | None = None
) -> TrainingRun:
    """Queue one generator run (``training.generator_runner``; its config is validated
    there: ``invalid`` naming the key); one generator run at a time, and none while the
    broker is unreachable (503, nothing stored)."""
    from .generator_runner import validate_generator_config

    try:
        validate_generator_config(config)
    except ValueError as exc:
        raise AppError(INVALID, str(exc), field="config") from None
    return _queue_run(ModelKind.GENERATOR, TRAIN_GENERATOR, "Generator run", trigger, config)


def _queue_run(kind: str, task: str, what: str, trigger: str,
               config: dict[str, Any] | None) -> TrainingRun:
    """One run of ``kind`` at a time (the row lock serialises concurrent requests)."""
    require_broker()
    with transaction.atomic():
        busy = (
            TrainingRun.objects.select_for_update()
            .filter(kind=kind, status__in=TrainingRun.ACTIVE)
            .first()
        )
        if busy is not None:
            raise AppError(
                errors.RUN_IN_PROGRESS, f"{what} {busy.id} is {busy.status}; wait for it to finish.",
            )
        run = TrainingRun.objects.create(kind=kind, trigger=trigger, config=dict(config or {}))
        enqueue_work(run, task)
    return run


def cancel_training_run(run: TrainingRun) -> TrainingRun:
    """Cancel a queued or running run. A running one stops after its current epoch (the
    runner checks at every epoch) and registers no version; either way it no longer blocks
    a new run."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in TrainingRun.ACTIVE:
            raise AppError(
                errors.NOT_CANCELLABLE, f"The run is {run.status}; only active runs cancel.",
                field="status",
            )
        run.status = TrainingRun.Status.CANCELLED
        run.stop_reason = "cancelled"
        run.finished = timezone.now()
        run.save(update_fields=["status", "stop_reason", "finished"])
    return run


def sweep_runs(now=None) -> dict[str, int]:
    """Re-send queued runs the broker never took (or lost), and re-queue running runs whose
    heartbeat is stale (their worker died): the next attempt claims the run and starts over;
    a duplicate delivery is refused by the claim (``runner.mark_running``)."""
    resent, requeued, sent = sweep_stale(TrainingRun, TRAIN_PROXY, "training run", now)
    return {"runs_resent": resent, "runs_requeued": requeued, "runs_sent": sent}


def maybe_retrain(*, scheduled: bool = False) -> TrainingRun | None:
    """The beat entry point: retrain when N new labels arrived (or on the operator's schedule
    whenever there is at least one new label)."""
    n = selectors.new_labels_since_last_run()
    need = 1 if scheduled else settings.DEID_RETRAIN_MIN_NEW_LABELS
    if n < need:
        log.info("retraining skipped: %d new labels, %d needed", n, need)
        return None
    if TrainingRun.objects.filter(
        kind=ModelKind.HUMAN_PROXY, status__in=TrainingRun.ACTIVE
    ).exists():
        return None
    trigger = TrainingRun.Trigger.SCHEDULE if scheduled else TrainingRun.Trigger.NEW_LABELS
    return request_training_run(trigger=trigger)
