"""Writes about face images. Ingest is one function, called by the API, the CLI, tasks and
the jobs runner (for outputs); ``ingest_upload`` is the one way an HTTP upload comes in."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from deidplatform.errors import AppError
from models_app.vision import faces
from models_app.vision.imagefile import ImageRejected, encode_png, load_rgb

from . import errors
from .erasure import erase_images
from .models import FaceImage, Subject

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """``outcome``: imported, duplicate or rejected. ``image`` is set unless rejected."""

    outcome: str
    image: FaceImage | None = None
    code: str = ""
    detail: str = ""
    warnings: list[str] = field(default_factory=list)


def get_or_create_subject(label: str, source: str = "") -> Subject:
    subject, _ = Subject.objects.get_or_create(label=label, defaults={"source": source})
    return subject


def ingest_image(
    data: bytes,
    *,
    subject: Subject | None = None,
    subject_label: str | None = None,
    subject_source: str = "",
    kind: str = FaceImage.Kind.SOURCE,
    parent: FaceImage | None = None,
    multi_face_policy: str | None = None,
    allow_no_face: bool = False,
) -> IngestResult:
    """Validate, detect, align and store one image file.

    Either both the files and the row exist afterwards, or neither does. A file whose
    bytes were ingested before returns that image as a duplicate. ``allow_no_face`` keeps
    an image without a detectable face (de-identified outputs: the failure is a result, not
    bad input), stored with status rejected and no chip. ``subject_label`` names a subject
    that is created (if new) only in the transaction that stores the image, so a rejected
    file leaves no row at all.
    """
    digest = hashlib.sha256(data).hexdigest()
    existing = FaceImage.objects.filter(sha256=digest).first()
    if existing is not None:
        return IngestResult("duplicate", existing)
    try:
        img = load_rgb(
            data,
            max_bytes=settings.DEID_MAX_UPLOAD_BYTES,
            max_pixels=settings.DEID_MAX_IMAGE_PIXELS,
            min_side=settings.DEID_MIN_IMAGE_SIDE,
        )
    except ImageRejected as exc:
        return IngestResult("rejected", code=exc.code, detail=exc.detail)

    try:
        found = faces.detect_and_align(
            img.rgb,
            upsample_steps=settings.DEID_DETECT_UPSAMPLE,
            cnn_fallback=settings.DEID_DETECT_CNN_FALLBACK,
            max_pixels=settings.DEID_DETECT_MAX_PIXELS,
            cnn_max_pixels=settings.DEID_DETECT_CNN_MAX_PIXELS,
            time_budget_s=settings.DEID_DETECT_TIME_BUDGET_S,
        )
    except faces.FaceSearchTooCostly as exc:
        if not allow_no_face:
            return IngestResult("rejected", code=errors.FACE_SEARCH_TOO_COSTLY, detail=str(exc))
        found = None
    new_subject = (subject_label, subject_source) if subject is None and subject_label else None
    if found is None:
        if allow_no_face:
            image = FaceImage(
                subject=subject, kind=kind, parent=parent, sha256=digest, width=img.width,
                height=img.height, status=FaceImage.Status.REJECTED, reason="no_face", n_faces=0,
            )
            return _store(image, encode_png(img.rgb), None, ["no face found"], new_subject)
        return IngestResult("rejected", code=errors.NO_FACE, detail="No face was found in the image.")
    policy = multi_face_policy or settings.DEID_MULTI_FACE_POLICY
    notes: list[str] = []
    if found.n_faces > 1:
        if policy == "reject":
            return IngestResult(
                "rejected",
                code=errors.SEVERAL_FACES,
                detail=f"{found.n_faces} faces were found; this platform is set to refuse them.",
            )
        notes.append(f"{found.n_faces} faces found; the most central one was kept")

    image = FaceImage(
        subject=subject,
        kind=kind,
        parent=parent,
        sha256=digest,
        width=img.width,
        height=img.height,
        box=list(found.box),
        landmarks=[list(p) for p in found.landmarks],
        n_faces=found.n_faces,
        multi_face=found.n_faces > 1,
        reason="; ".join(notes),
    )
    return _store(image, encode_png(img.rgb), encode_png(found.chip), notes, new_subject)


def _store(
    image: FaceImage,
    file_png: bytes,
    chip_png: bytes | None,
    notes: list[str],
    new_subject: tuple[str, str] | None = None,
) -> IngestResult:
    saved: list[str] = []
    try:
        image.file.save("face.png", ContentFile(file_png), save=False)
        saved.append(image.file.name)
        if chip_png is not None:
            image.chip.save("chip.png", ContentFile(chip_png), save=False)
            saved.append(image.chip.name)
        with transaction.atomic():
            if new_subject is not None:
                # Created with the image or not at all (no orphan subject on a failure).
                image.subject = get_or_create_subject(*new_subject)
            image.save(force_insert=True)
    except IntegrityError:
        _remove(image, saved)
        if new_subject is not None:
            image.subject = None
        # Another process stored the same bytes between our check and our insert.
        return IngestResult("duplicate", FaceImage.objects.get(sha256=image.sha256))
    except BaseException:
        _remove(image, saved)
        raise
    return IngestResult("imported", image, warnings=notes)


def _remove(image: FaceImage, names: list[str]) -> None:
    for name in names:
        try:
            image.file.storage.delete(name)
        except OSError:  # pragma: no cover - best effort cleanup
            log.exception("could not remove %s", name)


def delete_face_image(image: FaceImage, *, actor=None) -> None:
    """Delete the image, its de-identified outputs, every pair people judged them in (with
    those judgments and labels, raters' counters following), every file (once the delete
    commits), its subject if left without images, and its id from training snapshots;
    audited (``faces.erasure``)."""
    erase_images([image], actor=actor)


def ingest_upload(
    upload, *, subject_label: str | None = None, source: str = "api",
    kind: str = FaceImage.Kind.SOURCE,
) -> IngestResult:
    """An uploaded file (anything with ``size`` and ``read()``) through ingest; a rejection
    raises :class:`AppError` with the ingest code, so every upload route answers alike.
    ``kind`` donor stores a donor-pool photo: never with a subject (no identity)."""
    if kind not in (FaceImage.Kind.SOURCE, FaceImage.Kind.DONOR):
        raise AppError(errors.INVALID_KIND, "Uploads are sources or donors.", field="kind")
    if kind == FaceImage.Kind.DONOR and subject_label:
        raise AppError(
            errors.INVALID_KIND, "A donor photo is never stored with a subject (no identity).",
            field="subject",
        )
    limit = settings.DEID_MAX_UPLOAD_BYTES
    if upload.size > limit:
        # Checked before reading the body into memory.
        raise AppError(
            errors.FILE_TOO_LARGE, f"The file is {upload.size} bytes; the limit is {limit}.",
            field="file", extra={"status": "rejected", "reason": errors.FILE_TOO_LARGE},
        )
    # The subject is created only with a stored image: a rejected upload leaves no row.
    result = ingest_image(upload.read(), subject_label=subject_label or None, subject_source=source,
                          kind=kind)
    if result.outcome == "rejected":
        raise AppError(
            result.code, result.detail, field="file",
            extra={"status": "rejected", "reason": result.code},
        )
    return result

