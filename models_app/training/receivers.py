"""Deletion that really deletes: a model version's files go once its delete commits, and
erased images and subjects leave no id in training runs' snapshots."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models.signals import post_delete
from django.dispatch import receiver

from models_app.faces.signals import images_erased
from models_app.faces.storage import delete_files_after_commit

from .erasure import scrub_snapshots
from .models import ModelKind, ModelVersion
from .signals import model_promoted

log = logging.getLogger(__name__)


@receiver(post_delete, sender=ModelVersion)
def _delete_model_files(sender, instance: ModelVersion, **kwargs) -> None:
    delete_files_after_commit([instance.file, instance.reliability_diagram])


@receiver(images_erased)
def _scrub_erased_ids(sender, image_ids: list[str], subject_ids: list[str], **kwargs) -> int:
    return scrub_snapshots(image_ids, subject_ids)


@receiver(model_promoted)
def _retrain_generator_after_proxy(sender, version: ModelVersion, **kwargs) -> None:
    """A new human proxy changes what score-A means: the generator in use is retrained
    with it (its last run's settings), unless one is training already. Off with
    ``DEID_GENERATOR_FOLLOWS_PROXY = False``."""
    from deidplatform.errors import AppError

    from .selectors import promoted_version, run_in_progress
    from .services import request_generator_run

    if version.kind != ModelKind.HUMAN_PROXY:
        return
    if not getattr(settings, "DEID_GENERATOR_FOLLOWS_PROXY", True):
        return
    current = promoted_version(ModelKind.GENERATOR)
    if current is None or run_in_progress(ModelKind.GENERATOR):
        return
    config = current.training_run.config if current.training_run_id else {}
    try:
        run = request_generator_run(config=config)
    except AppError as exc:  # broker down or a stale config: the operator can start one
        log.warning("generator not retrained after %s: %s", version, exc)
        return
    log.info("generator retraining %s queued after %s", run.pk, version)
