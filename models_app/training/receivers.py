"""Deletion that really deletes: a model version's files go once its delete commits."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from models_app.faces.storage import delete_files_after_commit

from .models import ModelVersion


@receiver(post_delete, sender=ModelVersion)
def _delete_model_files(sender, instance: ModelVersion, **kwargs) -> None:
    delete_files_after_commit([instance.file, instance.reliability_diagram])
