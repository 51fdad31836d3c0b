"""Permission-checked serving of private face files (operators; raters get theirs through
signed URLs in the ratings app)."""

from __future__ import annotations

import uuid

from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from .models import FaceImage
from .selectors import can_view_face_image
from .serving import VARIANTS, private_file_response


@require_GET
def serve_face_image(request: HttpRequest, image_id: uuid.UUID, variant: str) -> FileResponse:
    if variant not in VARIANTS:
        raise Http404
    image = get_object_or_404(FaceImage, pk=image_id)
    if not can_view_face_image(request.user, image):
        # 404, not 403: do not confirm that an id exists.
        raise Http404
    return private_file_response(image, variant)
