"""Networks: training runs and the model registry's versions."""

from __future__ import annotations

import uuid

from django.db import models


def _model_path(instance: ModelVersion, filename: str) -> str:
    return f"models/{instance.kind}/{instance.id.hex}.safetensors"


def _diagram_path(instance: ModelVersion, filename: str) -> str:
    return f"models/{instance.kind}/{instance.id.hex}-reliability.png"


class ModelKind(models.TextChoices):
    HUMAN_PROXY = "human_proxy", "human proxy"
    GENERATOR = "generator", "de-identification generator"


class TrainingRun(models.Model):
    """One training of a network: its config, data snapshot, per-epoch metrics, outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "manual"
        SCHEDULE = "schedule", "schedule"
        NEW_LABELS = "new_labels", "new labels"
        BOOTSTRAP = "bootstrap", "bootstrap"
        ROUND = "round", "closed-loop round"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=ModelKind.choices, default=ModelKind.HUMAN_PROXY)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=12, choices=Trigger.choices, default=Trigger.MANUAL)
    config = models.JSONField(default=dict, blank=True)
    data_snapshot = models.JSONField(
        default=dict, blank=True, help_text="pairs, label values, subject splits used"
    )
    history = models.JSONField(default=list, blank=True, help_text="per-epoch metrics")
    stop_reason = models.CharField(max_length=40, blank=True, default="")
    error = models.TextField(blank=True, default="")
    labels_used = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    # Dispatch and liveness (the sweeper, models_app/tasks.py): when the task was handed to
    # the broker (null: never, e.g. it was down), which attempt owns the run, and when that
    # attempt last showed it is alive (every epoch).
    dispatched = models.DateTimeField(null=True, blank=True)
    claim = models.UUIDField(null=True, blank=True, editable=False)
    heartbeat = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="trainingrun_status")]

    def __str__(self) -> str:
        return f"TrainingRun {self.id} ({self.status})"


class ModelVersion(models.Model):
    """A trained network in the registry. At most one version per kind is promoted."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        PROMOTED = "promoted", "promoted"
        RETIRED = "retired", "retired"
        REJECTED = "rejected", "rejected (failed its gate)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=ModelKind.choices, default=ModelKind.HUMAN_PROXY)
    number = models.PositiveIntegerField(help_text="1, 2, 3… per kind")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    is_prior = models.BooleanField(
        default=False,
        help_text="Bootstrap version trained before any judgment of de-identified outputs.",
    )
    file = models.FileField(upload_to=_model_path, max_length=200)
    sha256 = models.CharField(max_length=64)
    reliability_diagram = models.FileField(upload_to=_diagram_path, max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    gate = models.JSONField(default=dict, blank=True, help_text="the promotion gate's decision")
    battery = models.JSONField(
        default=dict, blank=True,
        help_text="the perceptual battery's result on held-out faces (models_app.vision.battery)",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    training_run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version"
    )
    created = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["kind", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "number"], name="modelversion_kind_number"),
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(status="promoted"),
                name="modelversion_one_promoted_per_kind",
            ),
        ]

    def __str__(self) -> str:
        prior = " (prior)" if self.is_prior else ""
        return f"{self.get_kind_display()} v{self.number}{prior} [{self.status}]"
