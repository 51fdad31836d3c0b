"""Reads of the training domain: the registry's versions and the human proxy's training data
(stored judgments and images turned into pair tables).

Reads only. Image keys are FaceImage UUIDs (strings); subjects are Subject UUIDs (an
output counts as its source's subject). The held-out subjects are fixed by a hash of the
subject id, so every version is gated on the same held-out human labels and none was
trained on them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import Avg, Q, QuerySet

from deidplatform.errors import AppError
from models_app.faces.models import FaceImage
from models_app.proxy.data import (
    LabelledPair,
    PairTable,
    SubjectSplit,
    human_pair_weight,
    make_natural_pairs,
)
from ratings.models import Judgment, PairLabel

from . import errors
from .models import ModelKind, ModelVersion, TrainingRun

HELD_OUT_PERCENT = 20


MIN_HELD_OUT_SUBJECTS = 3


def _hash100(subject_id: str) -> float:
    digest = hashlib.sha256(f"heldout:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def held_out_subjects(subjects: Iterable[str], percent: int = HELD_OUT_PERCENT) -> list[str]:
    """The subjects whose hash falls under ``percent`` (stable as data grows), topped up in
    hash order to at least MIN_HELD_OUT_SUBJECTS so a small data set still has a test part."""
    ranked = sorted(subjects, key=_hash100)
    k = sum(1 for s in ranked if _hash100(s) < percent)
    k = max(k, min(MIN_HELD_OUT_SUBJECTS, len(ranked) // 3))
    return ranked[:k]


def _subject_of(img: FaceImage) -> str:
    if img.subject_id is not None:
        return str(img.subject_id)
    if img.parent_id is not None and img.parent.subject_id is not None:
        return str(img.parent.subject_id)
    return f"image:{img.pk}"  # an image of unknown identity is its own subject


@dataclass
class TrainingData:
    pairs: PairTable
    images: dict[str, FaceImage]
    judgments: list[tuple[str, str, bool]]  # (pair_id, rater_id, same) of human pairs
    n_labels: int
    # Labels that counted a simulated crowd's judgments (a dry run's campaign asked for it):
    # recorded with the version, so a proxy trained on them never passes for people's.
    n_simulated_labels: int = 0


def human_labelled_pairs() -> tuple[list[LabelledPair], dict[str, FaceImage], list[tuple[str, str, bool]]]:
    """Every aggregated label, weighted by its judgments and their raters' reliability."""
    pairs: list[LabelledPair] = []
    images: dict[str, FaceImage] = {}
    labels = PairLabel.objects.select_related(
        "pair__image_a__parent", "pair__image_b__parent"
    ).filter(pair__active=True)
    reliab = dict(
        Judgment.objects.filter(rater__blocked=False)
        .values("pair_id")
        .annotate(r=Avg("rater__reliability"))
        .values_list("pair_id", "r")
    )
    for label in labels:
        a, b = label.pair.image_a, label.pair.image_b
        if not (a.landmarks and b.landmarks):
            continue
        images[str(a.pk)], images[str(b.pk)] = a, b
        r = reliab.get(label.pair_id)
        pairs.append(LabelledPair(
            a=str(a.pk), b=str(b.pk), target=float(label.score_a),
            weight=human_pair_weight(label.n_judgments, 1.0 if r is None else min(max(r, 0.0), 1.0)),
            subject_a=_subject_of(a), subject_b=_subject_of(b), natural=False,
            pair_id=f"pair:{label.pair_id}",
        ))
    judged = [int(p.pair_id.split(":")[1]) for p in pairs]
    rows = [
        (f"pair:{pid}", str(rid), bool(same))
        for pid, rid, same in Judgment.objects.filter(pair_id__in=judged, rater__blocked=False)
        .values_list("pair_id", "rater_id", "same")
    ]
    return pairs, images, rows


def natural_pairs(n_same: int, n_different: int, seed: int) -> tuple[PairTable, dict[str, FaceImage]]:
    """Two photos of one subject (target 1) or of two subjects (target 0), from sources."""
    qs = FaceImage.objects.filter(
        kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK, subject__isnull=False
    ).exclude(Q(landmarks__isnull=True))
    imgs = {str(i.pk): i for i in qs.only("id", "subject_id", "landmarks", "box", "file")}
    table = make_natural_pairs(
        {k: str(v.subject_id) for k, v in imgs.items()}, n_same, n_different, seed
    )
    used = set(table.image_keys)
    return table, {k: v for k, v in imgs.items() if k in used}


def battery_images(n: int) -> list[tuple[FaceImage, FaceImage, FaceImage]]:
    """(a, b, donor) source photos for the perceptual battery: up to ``n`` held-out subjects
    (the same fixed hash as the gate's, so no version trained on them), a and b two photos
    of one subject (a twice when it has one), the donor the next subject's first photo.
    The same faces for every version, in a stable order."""
    qs = FaceImage.objects.filter(
        kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK, subject__isnull=False
    ).exclude(landmarks__isnull=True).order_by("subject_id", "created", "id")
    by_subject: dict[str, list[FaceImage]] = {}
    for img in qs.only("id", "subject_id", "landmarks", "box", "file", "created"):
        by_subject.setdefault(str(img.subject_id), []).append(img)
    held = held_out_subjects(by_subject)[:n]
    if len(held) < 2:
        return []  # a donor must be another person
    return [
        (by_subject[s][0], by_subject[s][min(1, len(by_subject[s]) - 1)],
         by_subject[held[(i + 1) % len(held)]][0])
        for i, s in enumerate(held)
    ]


def simulated_label_count(pair_ids: Iterable[int]) -> int:
    """How many of these pairs' labels counted simulated judgments."""
    return (
        PairLabel.objects.filter(pair_id__in=list(pair_ids),
                                 pair__campaign__labels_include_simulated=True,
                                 pair__judgments__rater__simulated=True)
        .values("pair_id").distinct().count()
    )


def training_data(*, natural_same: int, natural_different: int, seed: int) -> TrainingData:
    human, images, rows = human_labelled_pairs()
    nat, nat_images = (
        natural_pairs(natural_same, natural_different, seed)
        if natural_same or natural_different else (PairTable(), {})
    )
    images.update(nat_images)
    simulated = simulated_label_count(int(p.pair_id.split(":")[1]) for p in human)
    return TrainingData(PairTable(human) + nat, images, rows, n_labels=len(human),
                        n_simulated_labels=simulated)


def fixed_split(pairs: PairTable, val_percent: int = 20, seed: int = 0) -> SubjectSplit:
    """Test = the fixed held-out subjects; validation = a seeded share of the rest."""
    rng = np.random.default_rng(seed)
    subjects = sorted(pairs.subjects)
    test = sorted(held_out_subjects(subjects))
    rest = sorted(set(subjects) - set(test))
    order = rng.permutation(len(rest))
    n_val = max(1, round(len(rest) * val_percent / 100)) if len(rest) > 1 else 0
    val = sorted(rest[i] for i in order[:n_val])
    train = sorted(set(rest) - set(val))
    return SubjectSplit(train, val, test)


# --- The registry: versions and their weights ------------------------------------------------


def promoted_version(kind: str = ModelKind.HUMAN_PROXY) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.PROMOTED).first()


def versions(kind: str = ModelKind.HUMAN_PROXY) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(kind=kind).order_by("-number")


def read_weights(version: ModelVersion) -> bytes:
    """The version's file, checked against its recorded SHA-256."""
    with version.file.storage.open(version.file.name, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != version.sha256:
        raise AppError(
            errors.CORRUPT_MODEL,
            f"v{version.number}'s file does not match its recorded checksum.",
        )
    return data


_model_cache: dict[str, Any] = {}


def load_version_model(version: ModelVersion) -> Any:
    """The version's network, checksum-verified, loaded without unpickling; cached per id.
    Human proxies only (a generator is loaded by :func:`load_generator_version`)."""
    from models_app.device import get_device
    from models_app.proxy.io import load_proxy  # torch: only where a network is needed

    if version.kind != ModelKind.HUMAN_PROXY:
        raise ValueError(f"{version} is not a human proxy")
    key = str(version.pk)
    model = _model_cache.get(key)
    if model is None:
        model = load_proxy(read_weights(version), device=get_device())
        _model_cache.clear()  # keep one version in memory per worker
        _model_cache[key] = model
    return model


def load_generator_version(version: ModelVersion) -> Any:
    """A generator version's network (``models_app.generator``), checksum-verified; cached
    per id beside the proxy (one of each kind per worker)."""
    from models_app.device import get_device
    from models_app.generator.io import load_generator

    if version.kind != ModelKind.GENERATOR:
        raise ValueError(f"{version} is not a generator")
    key = f"generator:{version.pk}"
    model = _generator_cache.get(key)
    if model is None:
        model = load_generator(read_weights(version), device=get_device())
        _generator_cache.clear()
        _generator_cache[key] = model
    return model


_generator_cache: dict[str, Any] = {}


def clear_model_cache() -> None:
    """Forget loaded networks (tests; a worker that must reload from storage)."""
    _model_cache.clear()
    _generator_cache.clear()


def generator_faces(
    subjects: Iterable[str] | None = None,
) -> tuple[list[FaceImage], list[FaceImage]]:
    """(training, held-out) source faces for a generator: usable sources with a subject,
    held-out by the registry's fixed subject hash (the proxy gate's held-out subjects), so
    no generator trains on the faces it is gated on. ``subjects``: only these."""
    qs = FaceImage.objects.filter(
        kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK, subject__isnull=False
    ).exclude(landmarks__isnull=True).order_by("subject_id", "created", "id")
    if subjects is not None:
        qs = qs.filter(subject_id__in=list(subjects))
    by_subject: dict[str, list[FaceImage]] = {}
    for img in qs:
        by_subject.setdefault(str(img.subject_id), []).append(img)
    held = set(held_out_subjects(by_subject))
    train = [i for s, imgs in by_subject.items() if s not in held for i in imgs]
    test = [i for s, imgs in by_subject.items() if s in held for i in imgs]
    return train, test


def faces_in_order(ids: Iterable[str]) -> list[FaceImage]:
    """The usable source faces of these ids, in that order (a resumed run's snapshot)."""
    ids = list(ids)
    found = {str(i.pk): i for i in FaceImage.objects.filter(
        pk__in=ids, status=FaceImage.Status.OK).exclude(landmarks__isnull=True)}
    return [found[i] for i in ids if i in found]


def new_labels_since_last_run() -> int:
    """Aggregated labels created or changed since the last run that used data."""
    last = (
        TrainingRun.objects.filter(kind=ModelKind.HUMAN_PROXY)
        .exclude(status=TrainingRun.Status.FAILED)
        .order_by("-created")
        .first()
    )
    qs = PairLabel.objects.all()
    if last is not None:
        qs = qs.filter(updated__gt=last.created)
    return qs.count()


def run_in_progress(kind: str = ModelKind.HUMAN_PROXY) -> bool:
    return TrainingRun.objects.filter(kind=kind, status__in=TrainingRun.ACTIVE).exists()
