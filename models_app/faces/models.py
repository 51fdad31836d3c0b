"""Face images: pseudonymous subjects and face images (sources and de-identified outputs).

The upload paths are re-exported by ``models_app.models`` because the migrations name them
there (``models_app.models._face_path``); moving them would change no behaviour but would
make the migration autodetector see new functions."""

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
        # A head-and-surroundings donor for the `disguise` parameterisation: consented or
        # licensed photos, never a rating source, never shown with an identity.
        DONOR = "donor", "donor"

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


class ErasureRecord(models.Model):
    """The audit trail of an erasure: who, when, what kind and how much was deleted.

    It holds nothing about the person: no label, no image, no id in the clear, only a salted
    hash of the erased subject's id (``faces.erasure.subject_hash``), so an operator who
    still knows an id can show that it was erased."""

    class Kind(models.TextChoices):
        SUBJECT = "subject", "subject"
        IMAGE = "image", "image"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    subject_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
    actor = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, default="")
    counts = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"ErasureRecord {self.id} ({self.kind})"
