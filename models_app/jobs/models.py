"""De-identification jobs: batches, jobs and their per-iteration trajectory."""

from __future__ import annotations

import uuid

from django.db import models

from models_app.faces.models import FaceImage
from models_app.training.models import ModelVersion


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


# What a job's success rests on (``final_detail.success_basis``, set by the runner): a
# success is never shown as a plain "succeeded" (issue 13: a prior proxy's score-A says
# little about people). Long form for a job's page and the API, short for lists.
VERDICTS = {
    "prior_proxy": "thresholds met by a prior proxy (never trained on judgments of outputs: "
                   "says little about people)",
    "proxy_trained_on_simulated_judgments": "thresholds met by a proxy trained on simulated "
                                            "judgments (a dry run, not people)",
    "proxy_trained_on_peoples_judgments": "thresholds met by a proxy trained on people's "
                                          "judgments of outputs (not yet judged by people)",
}
SHORT_VERDICTS = {
    "prior_proxy": "met · prior proxy",
    "proxy_trained_on_simulated_judgments": "met · simulated-trained proxy",
    "proxy_trained_on_peoples_judgments": "met · people-trained proxy",
}
# How the job counts on the overview and round pages label the status "succeeded".
SUCCEEDED_COUNT_LABEL = "thresholds met (by a proxy)"


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
    # The ladder: per threshold crossed, {threshold, iteration, score_a, score_b, image}
    # (image: the stored FaceImage id of that iterate, an output whose parent is the source).
    ladder = models.JSONField(default=list, blank=True)
    # Re-scored whenever another human proxy is promoted (the loop's own score stays above).
    current_score_a = models.FloatField(null=True, blank=True)
    current_proxy = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checkpoint = models.FileField(upload_to=_checkpoint_path, max_length=200, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    # Dispatch and liveness (the sweeper, models_app/tasks.py): when the task was handed to
    # the broker (null: never, e.g. it was down), which attempt owns the job, and when that
    # attempt last showed it is alive (every iteration).
    dispatched = models.DateTimeField(null=True, blank=True)
    claim = models.UUIDField(null=True, blank=True, editable=False)
    heartbeat = models.DateTimeField(null=True, blank=True)
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

    def _basis(self) -> str:
        # A list's queryset annotates ``success_basis`` so rows need not load final_detail.
        if "success_basis" in self.__dict__:
            return str(self.__dict__["success_basis"] or "")
        return str((self.final_detail or {}).get("success_basis", ""))

    @property
    def verdict(self) -> str:
        """The status, and for a success what it rests on (never a plain "succeeded")."""
        if self.status != self.Status.SUCCEEDED:
            return self.get_status_display()
        return VERDICTS.get(self._basis(), "thresholds met (basis not recorded)")

    @property
    def short_verdict(self) -> str:
        """:attr:`verdict` in a few words, for lists and galleries."""
        if self.status != self.Status.SUCCEEDED:
            return self.status
        return SHORT_VERDICTS.get(self._basis(), "met · basis not recorded")


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
