"""Images: pseudonymous subjects and face images (sources and de-identified outputs)."""

from __future__ import annotations

import uuid

from django.db import models


def _face_path(instance: FaceImage, filename: str) -> str:
    # Opaque: the row's UUID only, never a name or the uploaded filename.
    return f"faces/{instance.id.hex[:2]}/{instance.id.hex}.png"


def _chip_path(instance: FaceImage, filename: str) -> str:
    return f"chips/{instance.id.hex[:2]}/{instance.id.hex}.png"


class Subject(models.Model):
    """A pseudonymous person. ``label`` is what operators see; raters never see it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    label = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=100, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return self.label


class FaceImage(models.Model):
    class Status(models.TextChoices):
        OK = "ok", "ok"
        REJECTED = "rejected", "rejected"

    class Kind(models.TextChoices):
        SOURCE = "source", "source"
        OUTPUT = "output", "output"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject = models.ForeignKey(
        Subject, null=True, blank=True, on_delete=models.CASCADE, related_name="images"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.SOURCE)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="outputs"
    )
    file = models.FileField(upload_to=_face_path, max_length=200)
    chip = models.FileField(upload_to=_chip_path, max_length=200, blank=True)
    sha256 = models.CharField(max_length=64, unique=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    reason = models.CharField(max_length=200, blank=True, default="")
    box = models.JSONField(null=True, blank=True, help_text="left, top, right, bottom")
    landmarks = models.JSONField(null=True, blank=True, help_text="dlib 5-point, (x, y)")
    n_faces = models.PositiveSmallIntegerField(default=1)
    multi_face = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["subject", "kind"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"FaceImage {self.id}"


# --- Networks: training runs and the model registry ---------------------------------------


def _model_path(instance: ModelVersion, filename: str) -> str:
    return f"models/{instance.kind}/{instance.id.hex}.safetensors"


def _diagram_path(instance: ModelVersion, filename: str) -> str:
    return f"models/{instance.kind}/{instance.id.hex}-reliability.png"


class ModelKind(models.TextChoices):
    HUMAN_PROXY = "human_proxy", "human proxy"


class TrainingRun(models.Model):
    """One training of a network: its config, data snapshot, per-epoch metrics, outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "manual"
        SCHEDULE = "schedule", "schedule"
        NEW_LABELS = "new_labels", "new labels"
        BOOTSTRAP = "bootstrap", "bootstrap"

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
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

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


# --- De-identification jobs ----------------------------------------------------------------


def _checkpoint_path(instance: DeidJob, filename: str) -> str:
    return f"checkpoints/{instance.id.hex}.safetensors"


class DeidBatch(models.Model):
    """A batch of jobs started together (e.g. over a set of subjects)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    params = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created"]


class DeidJob(models.Model):
    """One run of the de-identification loop on one source image."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FINISHED = "finished", "finished without success"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.ForeignKey(FaceImage, on_delete=models.CASCADE, related_name="deid_jobs")
    batch = models.ForeignKey(
        DeidBatch, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    campaign = models.ForeignKey(
        "ratings.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True, help_text="validated job parameters")
    proxy_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="deid_jobs"
    )
    output = models.OneToOneField(
        FaceImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )
    stop_reason = models.CharField(max_length=20, blank=True, default="")
    iterations_done = models.PositiveIntegerField(default=0)
    final_score_a = models.FloatField(null=True, blank=True)
    final_score_b = models.FloatField(null=True, blank=True)
    final_detail = models.JSONField(default=dict, blank=True)
    # Re-scored whenever another human proxy is promoted (the loop's own score stays above).
    current_score_a = models.FloatField(null=True, blank=True)
    current_proxy = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checkpoint = models.FileField(upload_to=_checkpoint_path, max_length=200, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"DeidJob {self.id} ({self.status})"


class DeidIteration(models.Model):
    """One iteration of a job's loop: both scores, the loss terms and the time it took."""

    job = models.ForeignKey(DeidJob, on_delete=models.CASCADE, related_name="iterations")
    index = models.PositiveIntegerField()
    score_a = models.FloatField()
    score_b = models.FloatField()
    loss = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="deiditeration_job_index")
        ]
