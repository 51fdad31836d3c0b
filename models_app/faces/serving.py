"""Streaming a private face file. Callers check permission first; no face image has a
public URL (``faces.storage.PrivateStorage``)."""

from __future__ import annotations

from django.http import FileResponse, Http404

from .models import FaceImage

VARIANTS = ("image", "chip")


def private_file_response(image: FaceImage, variant: str) -> FileResponse:
    field = image.file if variant == "image" else image.chip
    if not field or not field.name:
        raise Http404
    try:
        handle = field.storage.open(field.name, "rb")
    except FileNotFoundError as exc:
        raise Http404 from exc
    # A neutral download name: never the uploaded filename or a subject.
    response = FileResponse(handle, content_type="image/png", filename=f"{variant}.png")
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
