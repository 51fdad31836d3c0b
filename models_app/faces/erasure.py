"""Erasure: deleting a person's data leaves no residue.

One subject's erasure deletes its images, their de-identified outputs (and the jobs that
made them, by cascade), every pair people judged them in with those judgments, holds and
labels, every file (once the delete commits), and the Subject row; raters' running
counters lose the deleted judgments; ids are scrubbed from training runs' data snapshots
(the training domain listens to :data:`images_erased`); the campaigns touched re-aggregate
their labels. What stays is an :class:`ErasureRecord`: who, when, how much, and a salted
hash of the subject id, nothing about the person.

Deleting one image (``services.delete_face_image``) goes through the same path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Case, Count, F, IntegerField, Q, Sum, When
from django.db.models.functions import Greatest
from django.utils.crypto import salted_hmac

from ratings.models import Judgment, Pair, PairLabel, Rater
from ratings.services.labels import mark_labels_pending

from .models import ErasureRecord, FaceImage, Subject
from .signals import images_erased

_HASH_SALT = "models_app.faces.erasure.subject"

# Running counters a judgment adds to (ratings.services.submission._record), taken back.
_COUNTERS = {
    "judgments_count": Count("id"),
    "too_fast_count": Sum("too_fast_i"),
    "attention_count": Sum("attention_i"),
    "attention_failed": Sum("attention_failed_i"),
    "gold_count": Sum("gold_i"),
    "gold_correct": Sum("gold_correct_i"),
}


def subject_hash(subject_id: uuid.UUID | str) -> str:
    """Salted (SECRET_KEY) HMAC-SHA256 of a subject id: lets the audit answer "was this id
    erased?" without keeping the id."""
    return salted_hmac(_HASH_SALT, str(subject_id), algorithm="sha256").hexdigest()


def _take_back_counters(judgments: Any) -> None:
    def flag(cond: Q) -> Case:
        return Case(When(cond, then=1), default=0, output_field=IntegerField())

    gold = Q(pair__kind__in=Pair.GOLD_KINDS)
    attention = Q(pair__kind=Pair.Kind.ATTENTION)
    rows = (
        judgments.annotate(
            too_fast_i=flag(Q(too_fast=True)), attention_i=flag(attention),
            attention_failed_i=flag(attention & Q(correct=False)), gold_i=flag(gold),
            gold_correct_i=flag(gold & Q(correct=True)),
        )
        .values("rater_id").annotate(**{f"n_{k}": v for k, v in _COUNTERS.items()})
        .order_by("rater_id")
    )
    for row in rows:
        # Flags (qualified, blocked) stay as decided; only the counts follow the rows.
        Rater.objects.filter(pk=row["rater_id"]).update(**{
            k: Greatest(F(k) - (row[f"n_{k}"] or 0), 0) for k in _COUNTERS
        })


def _erase_images(ids: list[uuid.UUID]) -> tuple[dict[str, int], list[uuid.UUID]]:
    """Delete these images (and their outputs) with every row that depends on them. Runs
    inside the caller's transaction; files go once it commits (faces.receivers)."""
    ids = list(dict.fromkeys(ids))
    all_ids, frontier = list(ids), list(ids)
    while frontier:  # outputs, and outputs made from outputs
        frontier = list(
            FaceImage.objects.filter(parent_id__in=frontier).exclude(pk__in=all_ids)
            .values_list("pk", flat=True)
        )
        all_ids += frontier
    pairs = Pair.objects.filter(Q(image_a_id__in=all_ids) | Q(image_b_id__in=all_ids))
    judgments = Judgment.objects.filter(pair__in=pairs)
    campaigns = set(pairs.values_list("campaign_id", flat=True))
    n_judgments = judgments.count()
    n_labels = PairLabel.objects.filter(pair__in=pairs).count()
    # Relative UPDATEs: they wait for a submission's rater lock and apply on its result.
    _take_back_counters(judgments)
    # Pairs protect their images, so they go first; judgments, holds and labels cascade.
    n_pairs = pairs.count()
    pairs.delete()
    n_outputs = len(all_ids) - len(ids)
    _, deleted = FaceImage.objects.filter(pk__in=ids).delete()
    for campaign_id in campaigns:
        mark_labels_pending(campaign_id)  # the remaining labels lose those judgments
    return {
        "images": len(ids), "outputs": n_outputs, "pairs": n_pairs, "judgments": n_judgments,
        "labels": n_labels, "jobs": deleted.get("models_app.DeidJob", 0),
    }, all_ids


def _scrub(image_ids: list[uuid.UUID], subject_ids: Iterable[uuid.UUID]) -> int:
    """Ask the other domains to forget these ids; how many rows they scrubbed."""
    answers = images_erased.send(
        sender=FaceImage, image_ids=[str(i) for i in image_ids],
        subject_ids=[str(s) for s in subject_ids],
    )
    return sum(n for _, n in answers if isinstance(n, int))


def _audit(kind: str, counts: dict[str, int], actor: Any, subject_id: Any = None) -> ErasureRecord:
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return ErasureRecord.objects.create(
        kind=kind, counts=counts, actor=user, actor_name=user.get_username() if user else "",
        subject_hash=subject_hash(subject_id) if subject_id is not None else "",
    )


def erase_images(
    images: Iterable[FaceImage], *, actor: AbstractBaseUser | AnonymousUser | None = None
) -> ErasureRecord:
    """Delete images with their outputs, pairs, judgments and files; scrub the ids. A
    subject left without images goes too (its row would be residue)."""
    with transaction.atomic():
        images = list(images)
        ids = [img.pk for img in images]
        subject_ids = {img.subject_id for img in images if img.subject_id is not None}
        counts, erased = _erase_images(ids)
        emptied = list(
            Subject.objects.filter(pk__in=subject_ids).exclude(images__isnull=False)
            .values_list("pk", flat=True)
        )
        Subject.objects.filter(pk__in=emptied).delete()
        counts["subjects"] = len(emptied)
        counts["training_runs_scrubbed"] = _scrub(erased, emptied)
        return _audit(ErasureRecord.Kind.IMAGE, counts, actor,
                      emptied[0] if len(emptied) == 1 else None)


def erase_subject(
    subject: Subject, *, actor: AbstractBaseUser | AnonymousUser | None = None
) -> ErasureRecord:
    """Delete a subject and everything of theirs (see the module docstring)."""
    with transaction.atomic():
        subject = Subject.objects.select_for_update().get(pk=subject.pk)
        ids = list(FaceImage.objects.filter(subject=subject).values_list("pk", flat=True))
        counts, erased = _erase_images(ids)
        subject_id = subject.pk
        subject.delete()
        counts["subjects"] = 1
        counts["training_runs_scrubbed"] = _scrub(erased, [subject_id])
        return _audit(ErasureRecord.Kind.SUBJECT, counts, actor, subject_id)
