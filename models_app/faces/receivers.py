"""Deletion that really deletes: a face image's private files go once its delete commits."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import FaceImage
from .storage import delete_files_after_commit


@receiver(post_delete, sender=FaceImage)
def _delete_face_files(sender, instance: FaceImage, **kwargs) -> None:
    delete_files_after_commit([instance.file, instance.chip])
