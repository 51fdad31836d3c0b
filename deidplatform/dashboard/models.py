"""The audit log of operator actions taken from the dashboard."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditLog(models.Model):
    """Who did what to which record, and when. ``target_id`` is the record's opaque id (a
    UUID or a number); ``detail`` holds small facts about the action (a version number, a
    reason), never an image, a name or anything biometric."""

    class Action(models.TextChoices):
        PROMOTE = "promote", "promote a version"
        ROLLBACK = "rollback", "roll back the proxy"
        BLOCK = "block", "block a rater"
        UNBLOCK = "unblock", "unblock a rater"
        START_ROUND = "start_round", "start a round"
        CANCEL_JOB = "cancel_job", "cancel a job"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    # Kept when the account is deleted: the log still says who it was.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    target_type = models.CharField(max_length=40)
    target_id = models.CharField(max_length=64)
    detail = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.target_type}:{self.target_id}"
