"""A round of the closed loop: its face set, stage, what each stage made, and its report."""

from __future__ import annotations

import uuid

from django.db import models

from models_app.faces.models import FaceImage
from models_app.jobs.models import DeidBatch
from models_app.training.models import ModelVersion, TrainingRun


def _plot_path(instance: Round, filename: str) -> str:
    return f"rounds/{instance.id.hex}-report.png"


class Round(models.Model):
    """One round. ``advance`` (models_app.rounds.services) moves it stage by stage; every
    stage is idempotent, so whoever holds the lease next (the ``run_rounds`` command, the
    beat task, an operator's trigger) resumes where a killed process stopped."""

    class Stage(models.TextChoices):
        JOBS = "jobs", "de-identification jobs"
        CAMPAIGN = "campaign", "campaign of pairs"
        JUDGMENTS = "judgments", "judgments"
        LABELS = "labels", "labels"
        TRAINING = "training", "retraining and gate"
        REPORT = "report", "report"
        DONE = "done", "done"

    ORDER = [Stage.JOBS, Stage.CAMPAIGN, Stage.JUDGMENTS, Stage.LABELS, Stage.TRAINING,
             Stage.REPORT, Stage.DONE]

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Rounds of one series follow each other (run_rounds --rounds N); number counts in it.
    series = models.CharField(max_length=64, db_index=True)
    number = models.PositiveIntegerField(default=0)
    previous = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next_round"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.JOBS)
    config = models.JSONField(default=dict, blank=True, help_text="validated round settings")
    # The face set: source images whose subjects no earlier round of the series used. An
    # erased face leaves the set with its row (the through table cascades).
    faces = models.ManyToManyField(FaceImage, related_name="+", blank=True)
    batch = models.OneToOneField(
        DeidBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="round"
    )
    campaign = models.OneToOneField(
        "ratings.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="round"
    )
    proxy_before = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The promoted proxy the round's jobs used.",
    )
    training_run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="round"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The version the round's training run registered (promoted or not).",
    )
    # {stage: {"started": iso, "finished": iso, "seconds": float}}
    stage_times = models.JSONField(default=dict, blank=True)
    # Facts a stage recorded for the ones after it (pair candidates, crowd run, …).
    state = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    report_plot = models.FileField(upload_to=_plot_path, max_length=200, blank=True)
    error = models.TextField(blank=True, default="")
    # Who advances it now: a lease, so a killed advancer's round is picked up when it lapses.
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["series", "number"], name="round_series_number"),
        ]

    def __str__(self) -> str:
        return f"Round {self.series}#{self.number} ({self.stage}, {self.status})"
