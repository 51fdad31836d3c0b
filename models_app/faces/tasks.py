"""Celery tasks of the faces domain."""

from __future__ import annotations

import base64

from celery import shared_task

from deidplatform.celery import INGEST_FILE

from .services import ingest_image


@shared_task(name=INGEST_FILE)
def ingest_file_task(data_b64: str, subject_label: str | None = None) -> dict:
    result = ingest_image(
        base64.b64decode(data_b64), subject_label=subject_label or None, subject_source="task"
    )
    return {
        "outcome": result.outcome,
        "id": str(result.image.id) if result.image else None,
        "code": result.code,
    }
