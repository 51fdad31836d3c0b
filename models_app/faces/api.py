"""REST API for face images and subjects. Thin: validate the request, call a service.

Permissions (``deidplatform.permissions``): reading needs ``view_faceimage`` /
``view_subject``, uploading ``add_faceimage``, deleting an image ``delete_faceimage``,
erasing a subject ``delete_subject`` (the data steward)."""

from __future__ import annotations

from django.db.models import Count, Q
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.permissions import RolePermission

from .erasure import erase_subject
from .models import FaceImage, Subject
from .serializers import (
    ErasureRecordSerializer,
    FaceImageSerializer,
    FaceImageUploadSerializer,
    SubjectSerializer,
)
from .services import delete_face_image, ingest_upload

_UPLOAD_ERRORS = {
    400: OpenApiResponse(description="unreadable or invalid file, or a missing field"),
    413: OpenApiResponse(description="the file is over the size limit"),
    422: OpenApiResponse(description="no usable face in the image"),
}


class FaceImageViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    queryset = FaceImage.objects.all().order_by("-created")
    serializer_class = FaceImageSerializer
    parser_classes = [MultiPartParser, FormParser]
    permission_classes = [RolePermission]

    @extend_schema(request={"multipart/form-data": FaceImageUploadSerializer},
                   responses={201: FaceImageSerializer, 200: FaceImageSerializer, **_UPLOAD_ERRORS})
    def create(self, request: Request) -> Response:
        upload = FaceImageUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        result = ingest_upload(
            upload.validated_data["file"], subject_label=upload.validated_data.get("subject"),
            kind=upload.validated_data.get("kind", FaceImage.Kind.SOURCE),
        )
        body = FaceImageSerializer(result.image).data
        body["duplicate"] = result.outcome == "duplicate"
        return Response(body, status=status.HTTP_200_OK if body["duplicate"] else status.HTTP_201_CREATED)

    def get_queryset(self):
        qs = super().get_queryset()
        kind = self.request.query_params.get("kind")
        return qs.filter(kind=kind) if kind else qs

    def perform_destroy(self, instance: FaceImage) -> None:
        delete_face_image(instance, actor=self.request.user)


class SubjectViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Pseudonymous subjects. ``DELETE`` erases one: images, outputs, pairs, judgments,
    files and snapshot ids; the answer is the audit record."""

    queryset = Subject.objects.annotate(
        n_images=Count("images", filter=Q(images__kind=FaceImage.Kind.SOURCE))
    ).order_by("label")
    serializer_class = SubjectSerializer
    permission_classes = [RolePermission]

    @extend_schema(request=None, responses={200: ErasureRecordSerializer})
    def destroy(self, request: Request, pk=None) -> Response:
        record = erase_subject(self.get_object(), actor=request.user)
        return Response(ErasureRecordSerializer(record).data)
