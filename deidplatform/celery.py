"""The one Celery app. Two queues: ``gpu`` runs networks, ``cpu`` runs everything else.

Routes are explicit so that a new task never lands on the wrong worker by accident; a
task with no route goes to ``cpu``.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deidplatform.settings")

app = Celery("deidplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"

# Tasks that run a network go to the gpu queue; the rest to cpu.
TASK_ROUTES: dict[str, dict[str, str]] = {
    "models_app.tasks.ping": {"queue": CPU_QUEUE},
    "models_app.tasks.ingest_file": {"queue": CPU_QUEUE},
    "models_app.tasks.device_info": {"queue": GPU_QUEUE},
    "models_app.tasks.train_proxy": {"queue": GPU_QUEUE},
    "models_app.tasks.rescore_outputs": {"queue": GPU_QUEUE},
    "models_app.tasks.run_deid_job": {"queue": GPU_QUEUE},
    "models_app.tasks.maybe_retrain": {"queue": CPU_QUEUE},
    "ratings.tasks.update_campaign_labels": {"queue": CPU_QUEUE},
    "ratings.tasks.reclaim_expired_holds": {"queue": CPU_QUEUE},
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
