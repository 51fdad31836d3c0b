"""Celery tasks: thin wrappers that call services. Routes live in deidplatform/celery.py."""

from __future__ import annotations

import base64

from celery import shared_task


@shared_task(name="models_app.tasks.ping")
def ping(value: str = "pong") -> dict:
    """Round trip through the broker and the database (counts rows the worker can see)."""
    from .models import FaceImage

    return {"value": value, "face_images": FaceImage.objects.count()}


@shared_task(name="models_app.tasks.device_info")
def device_info() -> dict:
    from .device import get_device

    dev = get_device()
    return {"device": str(dev)}


@shared_task(name="models_app.tasks.ingest_file")
def ingest_file(data_b64: str, subject_label: str | None = None) -> dict:
    from .services import get_or_create_subject, ingest_image

    subject = get_or_create_subject(subject_label, source="task") if subject_label else None
    result = ingest_image(base64.b64decode(data_b64), subject=subject)
    return {
        "outcome": result.outcome,
        "id": str(result.image.id) if result.image else None,
        "code": result.code,
    }


# --- Human proxy: training and retraining ----------------------------------------------------


@shared_task(name="models_app.tasks.train_proxy", bind=True, acks_late=True)
def train_proxy(self, run_id: str) -> dict:
    from .training import execute_training_run

    return execute_training_run(run_id)


@shared_task(name="models_app.tasks.maybe_retrain")
def maybe_retrain(scheduled: bool = False) -> dict:
    from .training import maybe_retrain as _maybe

    run = _maybe(scheduled=scheduled)
    return {"started": str(run.id) if run else None}


@shared_task(name="models_app.tasks.rescore_outputs")
def rescore_outputs(version_id: str) -> dict:
    from .jobs_runner import rescore_outputs as _rescore

    return _rescore(version_id)


# --- De-identification jobs --------------------------------------------------------------------


@shared_task(name="models_app.tasks.run_deid_job", bind=True, acks_late=True)
def run_deid_job(self, job_id: str) -> dict:
    from .jobs_runner import execute_deid_job

    return execute_deid_job(job_id)
