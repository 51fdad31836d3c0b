"""What the jobs domain does when others announce something.

* a human proxy was promoted (``training.signals.model_promoted``): re-score finished outputs;
* a job row was deleted: its checkpoint file goes once the delete commits.
"""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from deidplatform.celery import RESCORE_OUTPUTS, enqueue_on_commit
from models_app.faces.storage import delete_files_after_commit
from models_app.training.models import ModelKind, ModelVersion
from models_app.training.signals import model_promoted

from .models import DeidJob


@receiver(model_promoted)
def _rescore_after_promotion(sender, version: ModelVersion, **kwargs) -> None:
    if version.kind == ModelKind.HUMAN_PROXY:
        enqueue_on_commit(RESCORE_OUTPUTS, str(version.id))


@receiver(post_delete, sender=DeidJob)
def _delete_checkpoint(sender, instance: DeidJob, **kwargs) -> None:
    delete_files_after_commit([instance.checkpoint])
