"""Permission-checked serving of private face files. No face image has a public URL."""

from __future__ import annotations

import uuid

from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from .models import FaceImage
from .selectors import can_view_face_image

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


@require_GET
def serve_face_image(request: HttpRequest, image_id: uuid.UUID, variant: str) -> FileResponse:
    if variant not in VARIANTS:
        raise Http404
    image = get_object_or_404(FaceImage, pk=image_id)
    if not can_view_face_image(request.user, image):
        # 404, not 403: do not confirm that an id exists.
        raise Http404
    return private_file_response(image, variant)
