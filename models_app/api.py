"""REST API for face images. Thin: validation of the request, then the ingest service."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.api import FieldError

from .models import FaceImage
from .serializers import FaceImageSerializer, FaceImageUploadSerializer
from .services import delete_face_image, get_or_create_subject, ingest_image

_STATUS_FOR_CODE = {"file_too_large": status.HTTP_413_REQUEST_ENTITY_TOO_LARGE}


class FaceImageViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = FaceImage.objects.all().order_by("-created")
    serializer_class = FaceImageSerializer
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=FaceImageUploadSerializer, responses={201: FaceImageSerializer})
    def create(self, request: Request) -> Response:
        upload = FaceImageUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        f = upload.validated_data["file"]
        if f.size > settings.DEID_MAX_UPLOAD_BYTES:
            # Checked before reading the body into memory.
            raise FieldError(
                "file", "file_too_large",
                f"The file is {f.size} bytes; the limit is {settings.DEID_MAX_UPLOAD_BYTES}.",
                status_code=413,
            )
        label = upload.validated_data.get("subject")
        subject = get_or_create_subject(label, source="api") if label else None
        result = ingest_image(f.read(), subject=subject)
        if result.outcome == "rejected":
            code = _STATUS_FOR_CODE.get(
                result.code,
                status.HTTP_422_UNPROCESSABLE_ENTITY if result.code in ("no_face", "several_faces")
                else status.HTTP_400_BAD_REQUEST,
            )
            return Response(
                {"status": "rejected", "reason": result.code,
                 "errors": [{"field": "file", "code": result.code, "detail": result.detail}]},
                status=code,
            )
        body = FaceImageSerializer(result.image).data
        body["duplicate"] = result.outcome == "duplicate"
        return Response(body, status=status.HTTP_200_OK if body["duplicate"] else status.HTTP_201_CREATED)

    def perform_destroy(self, instance: FaceImage) -> None:
        delete_face_image(instance)
