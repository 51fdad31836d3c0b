"""Celery finds the app's tasks here (``autodiscover_tasks``): the platform's own checks,
and each domain's task module. Names and routes: ``deidplatform/celery.py``."""

from __future__ import annotations

from celery import shared_task

from deidplatform.celery import DEVICE_INFO, PING, SWEEP_STALE_WORK
from ratings.services.labels import requeue_stuck_label_updates

from .device import get_device
from .faces.models import FaceImage
from .faces.tasks import ingest_file_task
from .jobs.services import sweep_jobs
from .jobs.tasks import rescore_outputs_task, run_deid_job_task
from .rounds.tasks import advance_rounds_task, start_round_task
from .training.services import sweep_runs
from .training.tasks import maybe_retrain_task, train_generator_task, train_proxy_task

__all__ = [
    "advance_rounds_task", "device_info_task", "ingest_file_task", "maybe_retrain_task", "ping_task",
    "rescore_outputs_task", "run_deid_job_task", "start_round_task", "sweep_stale_work_task",
    "train_generator_task", "train_proxy_task",
]


@shared_task(name=PING)
def ping_task(value: str = "pong") -> dict:
    """Round trip through the broker and the database (counts rows the worker can see)."""
    return {"value": value, "face_images": FaceImage.objects.count()}


@shared_task(name=DEVICE_INFO)
def device_info_task() -> dict:
    return {"device": str(get_device())}


@shared_task(name=SWEEP_STALE_WORK)
def sweep_stale_work_task() -> dict:
    """Every minute (beat, migration 0004_heartbeats): nothing queued stays unsent, nothing
    running stays owned by a dead worker, no label update stays stuck (issue 12)."""
    return {**sweep_runs(), **sweep_jobs(), "labels_requeued": requeue_stuck_label_updates()}
