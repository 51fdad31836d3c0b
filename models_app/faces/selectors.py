"""Reads about face images: who may see one, and its pixels as arrays."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TypeVar

import numpy as np
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from PIL import Image

from deidplatform.errors import NOT_FOUND, AppError
from deidplatform.permissions import has_perms
from models_app.vision import faces

from .models import FaceImage, Subject

T = TypeVar("T", FaceImage, Subject)
VIEW_FACEIMAGE = "models_app.view_faceimage"


def can_view_face_image(user: AbstractBaseUser | AnonymousUser, image: FaceImage) -> bool:
    """Staff holding ``view_faceimage`` (every role; superusers) may see every image; staff
    alone may not. Raters see theirs through signed URLs (ratings app)."""
    return has_perms(user, [VIEW_FACEIMAGE])


def load_rgb_array(img: FaceImage) -> np.ndarray:
    with img.file.storage.open(img.file.name, "rb") as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"))


def context_of(img: FaceImage) -> np.ndarray:
    """The aligned 300x300 context crop from the stored photo and its stored landmarks."""
    return faces.context_crop(load_rgb_array(img), img.box, img.landmarks)


def contexts(images: Iterable[FaceImage]) -> tuple[list[str], np.ndarray]:
    imgs = list(images)
    arr = np.stack([context_of(i) for i in imgs]) if imgs else np.zeros((0, 300, 300, 3), np.uint8)
    return [str(i.pk) for i in imgs], arr


def donor_images():
    """The donor pool: usable donor photos (``kind`` donor, a face found, landmarks kept)."""
    return FaceImage.objects.filter(
        kind=FaceImage.Kind.DONOR, status=FaceImage.Status.OK, landmarks__isnull=False,
    ).order_by("created", "id")


# Donor features by (id, sha256): a donor's pixels never change, so each is measured once
# per worker process (a pool of a few hundred costs a few seconds the first time).
_DONOR_FEATURES: dict[tuple[str, str], np.ndarray] = {}


def choose_donors(context: np.ndarray, landmarks5, k: int = 1) -> list[tuple[FaceImage, np.ndarray]]:
    """The ``k`` donors of the pool that make the most natural photo with this source
    (similar pose, face size, light and skin tone: ``models_app.deid.donors``), best first,
    each with its aligned context crop. Empty when the pool is empty."""
    from models_app.deid.donors import donor_features, select_donors

    pool = list(donor_images())
    if not pool:
        return []
    feats = []
    for img in pool:
        key = (str(img.pk), img.sha256)
        if key not in _DONOR_FEATURES:
            _DONOR_FEATURES[key] = donor_features(context_of(img), img.landmarks)
        feats.append(_DONOR_FEATURES[key])
    order = select_donors(donor_features(context, landmarks5), np.stack(feats), k)
    return [(pool[i], context_of(pool[i])) for i in order]


def _all_by_id(model: type[T], ids: Iterable, field: str, what: str) -> list[T]:
    wanted = set(ids)
    found = list(model.objects.filter(pk__in=wanted))
    if len(found) != len(wanted):
        raise AppError(NOT_FOUND, f"Some {what} do not exist.", field=field)
    return found


def images_by_id(ids: Iterable, *, field: str = "images") -> list[FaceImage]:
    """The images with these ids; every id must exist (``not_found`` naming ``field``)."""
    return _all_by_id(FaceImage, ids, field, "images")


def subjects_by_id(ids: Iterable, *, field: str = "subjects") -> list[Subject]:
    """The subjects with these ids; every id must exist (``not_found`` naming ``field``)."""
    return _all_by_id(Subject, ids, field, "subjects")


def image_by_id(image_id, *, field: str = "image") -> FaceImage:
    try:
        return FaceImage.objects.get(pk=image_id)
    except FaceImage.DoesNotExist:
        raise AppError(NOT_FOUND, "No such image.", field=field) from None
