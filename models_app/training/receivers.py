"""Deletion that really deletes: a model version's files go once its delete commits, and
erased images and subjects leave no id in training runs' snapshots."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from models_app.faces.signals import images_erased
from models_app.faces.storage import delete_files_after_commit

from .erasure import scrub_snapshots
from .models import ModelVersion


@receiver(post_delete, sender=ModelVersion)
def _delete_model_files(sender, instance: ModelVersion, **kwargs) -> None:
    delete_files_after_commit([instance.file, instance.reliability_diagram])


@receiver(images_erased)
def _scrub_erased_ids(sender, image_ids: list[str], subject_ids: list[str], **kwargs) -> int:
    return scrub_snapshots(image_ids, subject_ids)
