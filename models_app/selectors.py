"""Reads about images."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from .models import FaceImage


def can_view_face_image(user: AbstractBaseUser | AnonymousUser, image: FaceImage) -> bool:
    """Staff may see every image. Raters see theirs through signed URLs (ratings app)."""
    return bool(user.is_authenticated and user.is_active and user.is_staff)
