"""Deletion that really deletes: a row's private files go with it, once the delete commits."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import DeidJob, FaceImage, ModelVersion


def _delete_after_commit(fields) -> None:
    names = [(f.storage, f.name) for f in fields if f and f.name]

    def _remove() -> None:
        for storage, name in names:
            storage.delete(name)

    transaction.on_commit(_remove)


@receiver(post_delete, sender=FaceImage)
def _delete_face_files(sender, instance: FaceImage, **kwargs) -> None:
    _delete_after_commit([instance.file, instance.chip])


@receiver(post_delete, sender=ModelVersion)
def _delete_model_files(sender, instance: ModelVersion, **kwargs) -> None:
    _delete_after_commit([instance.file, instance.reliability_diagram])


@receiver(post_delete, sender=DeidJob)
def _delete_checkpoint(sender, instance: DeidJob, **kwargs) -> None:
    _delete_after_commit([instance.checkpoint])
