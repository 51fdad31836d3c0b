"""Services for de-identification jobs: create, batch, cancel (writes only).

The loop itself runs in ``models_app.jobs_runner.execute_deid_job`` on a ``gpu`` worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from deidplatform.api import FieldError

from . import registry
from .job_params import validated_params
from .models import DeidBatch, DeidJob, FaceImage, ModelKind, Subject


def _check_source(source: FaceImage) -> None:
    if source.status != FaceImage.Status.OK or not source.landmarks:
        raise FieldError(
            "image", "image_rejected", "The image was rejected at ingest and cannot be used."
        )
    if source.kind != FaceImage.Kind.SOURCE:
        raise FieldError("image", "not_a_source", "Jobs start from source images, not outputs.")


def _promoted_proxy():
    proxy = registry.promoted_version(ModelKind.HUMAN_PROXY)
    if proxy is None:
        raise FieldError(
            "proxy", "no_promoted_proxy",
            "No human proxy is promoted yet: train one (POST /api/training-runs/) first.",
            status_code=409,
        )
    return proxy


def _check_campaign(campaign) -> None:
    from ratings.models import Campaign

    if campaign is not None and campaign.status == Campaign.Status.CLOSED:
        raise FieldError("campaign", "campaign_closed", "That campaign no longer takes pairs.")


def create_deid_job(
    source: FaceImage,
    params: dict[str, Any] | None = None,
    *,
    campaign=None,
    batch: DeidBatch | None = None,
    user=None,
) -> DeidJob:
    """Validate, store and enqueue one job (sent to the gpu queue once this commits)."""
    _check_source(source)
    _check_campaign(campaign)
    clean = validated_params(params)
    proxy = _promoted_proxy()
    with transaction.atomic():
        job = DeidJob.objects.create(
            source=source, params=clean, proxy_version=proxy, campaign=campaign, batch=batch,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        _enqueue(job)
    return job


def _enqueue(job: DeidJob) -> None:
    from . import tasks

    tasks.run_deid_job.delay_on_commit(str(job.id))


def create_batch(
    *,
    subjects: Iterable[Subject] = (),
    images: Iterable[FaceImage] = (),
    params: dict[str, Any] | None = None,
    campaign=None,
    user=None,
) -> DeidBatch:
    """One job per usable source image of the given subjects (and the given images)."""
    _check_campaign(campaign)
    clean = validated_params(params)
    proxy = _promoted_proxy()
    sources = {img.pk: img for img in images}
    subject_ids = [s.pk for s in subjects]
    for img in FaceImage.objects.filter(
        subject_id__in=subject_ids, kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK
    ):
        sources.setdefault(img.pk, img)
    if not sources:
        raise FieldError("subjects", "no_images", "No usable source image in the selection.")
    for img in sources.values():
        _check_source(img)
    with transaction.atomic():
        batch = DeidBatch.objects.create(
            params=clean, created_by=user if user is not None and user.is_authenticated else None
        )
        jobs = DeidJob.objects.bulk_create(
            DeidJob(source=img, params=clean, proxy_version=proxy, campaign=campaign, batch=batch,
                    created_by=batch.created_by)
            for img in sources.values()
        )
        for job in jobs:
            _enqueue(job)
    return batch


def cancel_job(job: DeidJob) -> DeidJob:
    """Cancel a queued or running job; the loop checks between iterations and stops."""
    with transaction.atomic():
        job = DeidJob.objects.select_for_update().get(pk=job.pk)
        if job.status not in DeidJob.ACTIVE:
            raise FieldError(
                "status", "not_cancellable", f"The job is {job.status}; only active jobs cancel.",
                status_code=409,
            )
        job.status = DeidJob.Status.CANCELLED
        job.stop_reason = "cancelled"
        job.save(update_fields=["status", "stop_reason"])
    return job
