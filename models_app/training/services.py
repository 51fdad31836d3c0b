"""Services of training runs: request one, retrain when new labels arrived (writes only).

Flow: ``request_training_run`` stores a queued ``TrainingRun`` and sends the
``train_proxy`` task to the gpu queue on commit; the worker runs
``training.runner.execute_training_run``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from deidplatform.celery import TRAIN_PROXY, enqueue_on_commit
from deidplatform.errors import AppError

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
    """Queue one run; refuses a second while one is queued or running."""
    with transaction.atomic():
        busy = (
            TrainingRun.objects.select_for_update()
            .filter(kind=ModelKind.HUMAN_PROXY, status__in=TrainingRun.ACTIVE)
            .first()
        )
        if busy is not None:
            raise AppError(
                errors.RUN_IN_PROGRESS,
                f"Training run {busy.id} is {busy.status}; wait for it to finish.",
            )
        run = TrainingRun.objects.create(
            kind=ModelKind.HUMAN_PROXY, trigger=trigger, config=dict(config or {})
        )
        enqueue_on_commit(TRAIN_PROXY, str(run.id))
    return run


def maybe_retrain(*, scheduled: bool = False) -> TrainingRun | None:
    """The beat entry point: retrain when N new labels arrived (or on the operator's schedule
    whenever there is at least one new label)."""
    n = selectors.new_labels_since_last_run()
    need = 1 if scheduled else settings.DEID_RETRAIN_MIN_NEW_LABELS
    if n < need:
        log.info("retraining skipped: %d new labels, %d needed", n, need)
        return None
    if TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).exists():
        return None
    trigger = TrainingRun.Trigger.SCHEDULE if scheduled else TrainingRun.Trigger.NEW_LABELS
    return request_training_run(trigger=trigger)
