"""The one Celery app. Two queues: ``gpu`` runs networks, ``cpu`` runs everything else.

Routes are explicit so that a new task never lands on the wrong worker by accident; a
task with no route goes to ``cpu``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deidplatform.settings")

app = Celery("deidplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"

# Registered task names. They are wire names (messages in the broker, beat rows in the
# database), so they stay put when code moves. Services enqueue by these names with
# ``enqueue_on_commit``: a task module imports its services, so a service importing the task
# module back would close an import circle.
PING = "models_app.tasks.ping"
DEVICE_INFO = "models_app.tasks.device_info"
INGEST_FILE = "models_app.tasks.ingest_file"
TRAIN_PROXY = "models_app.tasks.train_proxy"
MAYBE_RETRAIN = "models_app.tasks.maybe_retrain"
RESCORE_OUTPUTS = "models_app.tasks.rescore_outputs"
RUN_DEID_JOB = "models_app.tasks.run_deid_job"
UPDATE_CAMPAIGN_LABELS = "ratings.tasks.update_campaign_labels"
RECLAIM_EXPIRED_HOLDS = "ratings.tasks.reclaim_expired_holds"

# Tasks that run a network go to the gpu queue; the rest to cpu.
TASK_ROUTES: dict[str, dict[str, str]] = {
    PING: {"queue": CPU_QUEUE},
    INGEST_FILE: {"queue": CPU_QUEUE},
    DEVICE_INFO: {"queue": GPU_QUEUE},
    TRAIN_PROXY: {"queue": GPU_QUEUE},
    RESCORE_OUTPUTS: {"queue": GPU_QUEUE},
    RUN_DEID_JOB: {"queue": GPU_QUEUE},
    MAYBE_RETRAIN: {"queue": CPU_QUEUE},
    UPDATE_CAMPAIGN_LABELS: {"queue": CPU_QUEUE},
    RECLAIM_EXPIRED_HOLDS: {"queue": CPU_QUEUE},
}

app.conf.update(
    task_queues=(Queue(GPU_QUEUE), Queue(CPU_QUEUE)),
    task_default_queue=CPU_QUEUE,
    task_routes=TASK_ROUTES,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=7 * 24 * 3600,
    broker_connection_retry_on_startup=True,
    task_track_started=True,
)
app.autodiscover_tasks()


def enqueue_on_commit(name: str, *args: Any, **kwargs: Any) -> None:
    """Send task ``name`` once the current transaction commits (at once outside one), routed
    like ``task.delay_on_commit`` would be."""
    from django.db import transaction

    def send() -> None:
        task = app.tasks.get(name)  # registered here: apply_async honours eager mode too
        if task is not None:
            task.apply_async(args=args, kwargs=kwargs)
        else:
            app.send_task(name, args=args, kwargs=kwargs)

    transaction.on_commit(send)
