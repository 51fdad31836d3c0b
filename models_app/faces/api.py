"""REST API for face images. Thin: validate the request, call the ingest service."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from .models import FaceImage
from .serializers import FaceImageSerializer, FaceImageUploadSerializer
from .services import delete_face_image, ingest_upload


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
        result = ingest_upload(
            upload.validated_data["file"], subject_label=upload.validated_data.get("subject")
        )
        body = FaceImageSerializer(result.image).data
        body["duplicate"] = result.outcome == "duplicate"
        return Response(body, status=status.HTTP_200_OK if body["duplicate"] else status.HTTP_201_CREATED)

    def perform_destroy(self, instance: FaceImage) -> None:
        delete_face_image(instance)
