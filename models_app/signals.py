"""Deletion that really deletes: a FaceImage row's files go with it, once the delete commits."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import FaceImage


@receiver(post_delete, sender=FaceImage)
def _delete_files(sender, instance: FaceImage, **kwargs) -> None:
    names = [f.name for f in (instance.file, instance.chip) if f and f.name]
    storage = instance.file.storage

    def _remove() -> None:
        for name in names:
            storage.delete(name)

    transaction.on_commit(_remove)
