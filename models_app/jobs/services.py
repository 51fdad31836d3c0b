"""Services for de-identification jobs: create, batch, cancel, and hand an output to its
campaign (writes only).

The loop itself runs in ``jobs.runner.execute_deid_job`` on a ``gpu`` worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from deidplatform.celery import RUN_DEID_JOB, require_broker
from deidplatform.dispatch import enqueue_work, sweep_stale
from deidplatform.errors import INVALID, AppError
from models_app.faces.models import FaceImage, Subject
from models_app.faces.selectors import donor_images
from models_app.training.models import ModelKind, ModelVersion
from models_app.training.selectors import promoted_version
from ratings.models import Campaign
from ratings.services import create_pairs

from . import errors
from .models import DeidBatch, DeidJob
from .params import METHOD_ITERATIVE, method_of, validated_params

log = logging.getLogger(__name__)


def _check_source(source: FaceImage) -> None:
    if source.status != FaceImage.Status.OK or not source.landmarks:
        raise AppError(
            errors.IMAGE_REJECTED, "The image was rejected at ingest and cannot be used.",
            field="image",
        )
    if source.kind != FaceImage.Kind.SOURCE:
        raise AppError(
            errors.NOT_A_SOURCE, "Jobs start from source images, not outputs.", field="image"
        )


def _promoted_proxy() -> ModelVersion:
    proxy = promoted_version(ModelKind.HUMAN_PROXY)
    if proxy is None:
        raise AppError(
            errors.NO_PROMOTED_PROXY,
            "No human proxy is promoted yet: train one (POST /api/training-runs/) first.",
            field="proxy",
        )
    return proxy


def _with_generator(clean: dict[str, Any]) -> dict[str, Any]:
    """For ``method`` generator or hybrid: the promoted generator, named in the params (the
    job keeps using that version); a clear 409 when none is promoted, 400 when the job asks
    for another parameterisation than the generator predicts."""
    if method_of(clean) == METHOD_ITERATIVE:
        return clean
    gen = promoted_version(ModelKind.GENERATOR)
    if gen is None:
        raise AppError(
            errors.NO_PROMOTED_GENERATOR,
            f"method {clean['method']!r} needs a promoted generator: train one "
            "(POST /api/training-runs/ with kind=generator) first.",
            field="params.method",
        )
    plug = (gen.config.get("generator") or {}).get("parameterisation", "style")
    if clean.get("parameterisation") != plug:
        raise AppError(
            INVALID,
            f"the promoted generator predicts the {plug!r} parameterisation; a "
            f"{clean['method']!r} job must use it.",
            field="params.parameterisation",
        )
    return {**clean, "generator_version": str(gen.pk)}


def _check_campaign(campaign: Campaign | None) -> None:
    if campaign is not None and campaign.status == Campaign.Status.CLOSED:
        raise AppError(
            errors.CAMPAIGN_CLOSED, "That campaign no longer takes pairs.", field="campaign"
        )


def _check_donors(clean: dict[str, Any]) -> None:
    """A ``disguise`` job needs a donor pool (``import_faces --kind donor``, or uploads with
    ``kind`` donor)."""
    if clean.get("parameterisation") == "disguise" and not donor_images().exists():
        raise AppError(
            errors.NO_DONORS,
            "The disguise parameterisation needs donor photos: import some with "
            "`manage.py import_faces DIR --kind donor` or upload them with kind=donor.",
            field="params.parameterisation",
        )


def check_job_can_start(params: dict[str, Any] | None, campaign: Campaign | None) -> None:
    """Every refusal that does not depend on the source image, so that a job upload is
    refused before its photo is stored (nothing is left behind by a refused request)."""
    _with_generator(validated_params(params))
    _check_donors(validated_params(params))
    _check_campaign(campaign)
    _promoted_proxy()
    require_broker()


def create_deid_job(
    source: FaceImage,
    params: dict[str, Any] | None = None,
    *,
    campaign: Campaign | None = None,
    batch: DeidBatch | None = None,
    user=None,
) -> DeidJob:
    """Validate, store and enqueue one job (sent to the gpu queue once this commits)."""
    _check_source(source)
    _check_campaign(campaign)
    clean = _with_generator(validated_params(params))
    _check_donors(clean)
    proxy = _promoted_proxy()
    require_broker()  # 503 before storing anything while work cannot be queued
    with transaction.atomic():
        job = DeidJob.objects.create(
            source=source, params=clean, proxy_version=proxy, campaign=campaign, batch=batch,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        enqueue_work(job, RUN_DEID_JOB)
    return job


def create_batch(
    *,
    subjects: Iterable[Subject] = (),
    images: Iterable[FaceImage] = (),
    params: dict[str, Any] | None = None,
    campaign: Campaign | None = None,
    user=None,
) -> DeidBatch:
    """One job per usable source image of the given subjects (and the given images)."""
    _check_campaign(campaign)
    clean = _with_generator(validated_params(params))
    _check_donors(clean)
    proxy = _promoted_proxy()
    sources = {img.pk: img for img in images}
    subject_ids = [s.pk for s in subjects]
    for img in FaceImage.objects.filter(
        subject_id__in=subject_ids, kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK
    ):
        sources.setdefault(img.pk, img)
    if not sources:
        raise AppError(
            errors.NO_IMAGES, "No usable source image in the selection.", field="subjects"
        )
    for img in sources.values():
        _check_source(img)
    require_broker()
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
            enqueue_work(job, RUN_DEID_JOB)
    return batch


def cancel_job(job: DeidJob) -> DeidJob:
    """Cancel a queued or running job; the loop checks between iterations and stops."""
    with transaction.atomic():
        job = DeidJob.objects.select_for_update().get(pk=job.pk)
        if job.status not in DeidJob.ACTIVE:
            raise AppError(
                errors.NOT_CANCELLABLE, f"The job is {job.status}; only active jobs cancel.",
                field="status",
            )
        job.status = DeidJob.Status.CANCELLED
        job.stop_reason = "cancelled"
        job.save(update_fields=["status", "stop_reason"])
    return job


def sweep_jobs(now=None) -> dict[str, int]:
    """Re-send queued jobs the broker never took (or lost), and re-queue running jobs whose
    heartbeat is stale (their worker died): the next attempt resumes from the checkpoint; a
    duplicate delivery is refused by the claim (``runner._claim``)."""
    resent, requeued, sent = sweep_stale(DeidJob, RUN_DEID_JOB, "job", now)
    return {"jobs_resent": resent, "jobs_requeued": requeued, "jobs_sent": sent}


def send_output_to_campaign(job: DeidJob) -> None:
    """Put the job's (source, image) pairs into its campaign for people to judge: one per
    rung of its ladder and the final output (an image shared by several rungs, or by a rung
    and the output, is one pair); called in the transaction that finishes the job."""
    if job.campaign_id is None:
        return
    images = [r["image"] for r in job.ladder]
    if job.output_id is not None:
        images.append(str(job.output_id))
    images = list(dict.fromkeys(images))
    if not images:
        return
    create_pairs(job.campaign, [
        {"image_a": job.source_id, "image_b": image, "kind": "deid", "deid_job": job.pk}
        for image in images
    ])
