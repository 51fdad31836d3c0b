"""REST API for face images. Thin: validation of the request, then the ingest service."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.api import FieldError

from . import registry
from .job_params import validated_params
from .jobs import cancel_job, create_batch, create_deid_job
from .models import DeidJob, FaceImage, ModelKind, ModelVersion, Subject, TrainingRun
from .serializers import (
    DeidBatchCreateSerializer,
    DeidJobCreateSerializer,
    DeidJobDetailSerializer,
    DeidJobSerializer,
    FaceImageSerializer,
    FaceImageUploadSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)
from .services import delete_face_image, get_or_create_subject, ingest_image
from .training import request_training_run

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


# --- De-identification jobs ------------------------------------------------------------------


def _campaign(campaign_id: int | None):
    if campaign_id is None:
        return None
    from ratings.models import Campaign

    try:
        return Campaign.objects.get(pk=campaign_id)
    except Campaign.DoesNotExist:
        raise FieldError("campaign", "not_found", "No such campaign.") from None


class DeidJobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """De-identification jobs: start one (an image id or an upload), follow its trajectory,
    cancel it; ``batch`` starts one job per source image of a set of subjects."""

    queryset = DeidJob.objects.select_related("proxy_version").order_by("-created")
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def get_serializer_class(self):
        return DeidJobDetailSerializer if self.action == "retrieve" else DeidJobSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related("iterations")
        status_ = self.request.query_params.get("status")
        return qs.filter(status=status_) if status_ else qs

    @extend_schema(request=DeidJobCreateSerializer, responses={201: DeidJobSerializer})
    def create(self, request: Request) -> Response:
        body = DeidJobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        params = data.get("params")
        if isinstance(params, str):  # multipart sends JSON as a string
            import json

            try:
                params = json.loads(params)
            except ValueError:
                raise FieldError("params", "invalid", "params is not valid JSON.") from None
        validated_params(params)  # refuse bad parameters before storing an upload
        campaign = _campaign(data.get("campaign"))
        if data.get("image"):
            try:
                source = FaceImage.objects.get(pk=data["image"])
            except FaceImage.DoesNotExist:
                raise FieldError("image", "not_found", "No such image.", 404) from None
        else:
            f = data["file"]
            if f.size > settings.DEID_MAX_UPLOAD_BYTES:
                raise FieldError("file", "file_too_large", "The file is too large.", 413)
            label = data.get("subject")
            subject = get_or_create_subject(label, source="api") if label else None
            result = ingest_image(f.read(), subject=subject)
            if result.outcome == "rejected":
                raise FieldError("file", result.code, result.detail, 422)
            source = result.image
        job = create_deid_job(source, params, campaign=campaign, user=request.user)
        return Response(DeidJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: DeidJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        job = cancel_job(self.get_object())
        return Response(DeidJobSerializer(job).data)

    @extend_schema(request=DeidBatchCreateSerializer, responses={201: DeidJobSerializer(many=True)})
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        body = DeidBatchCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        subjects = list(Subject.objects.filter(pk__in=data["subjects"]))
        if len(subjects) != len(set(data["subjects"])):
            raise FieldError("subjects", "not_found", "Some subjects do not exist.")
        images = list(FaceImage.objects.filter(pk__in=data["images"]))
        if len(images) != len(set(data["images"])):
            raise FieldError("images", "not_found", "Some images do not exist.")
        batch = create_batch(
            subjects=subjects, images=images, params=data.get("params"),
            campaign=_campaign(data.get("campaign")), user=request.user,
        )
        jobs = batch.jobs.select_related("proxy_version").order_by("created")
        return Response(DeidJobSerializer(jobs, many=True).data, status=status.HTTP_201_CREATED)


# --- Human proxy: training runs and the model registry --------------------------------------


class TrainingRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = TrainingRun.objects.select_related("model_version").order_by("-created")
    serializer_class = TrainingRunSerializer
    parser_classes = [JSONParser]

    @extend_schema(request=TrainingRunCreateSerializer, responses={202: TrainingRunSerializer})
    def create(self, request: Request) -> Response:
        body = TrainingRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = request_training_run(config=body.validated_data["config"])
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = ModelVersion.objects.select_related("parent").order_by("kind", "-number")
    serializer_class = ModelVersionSerializer
    parser_classes = [JSONParser]

    @extend_schema(request=PromoteSerializer, responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk=None) -> Response:
        body = PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            version = registry.promote(self.get_object(), force=body.validated_data["force"])
        except registry.RegistryError as exc:
            raise FieldError("non_field_errors", exc.code, exc.detail, 409) from None
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    @action(detail=False, methods=["post"])
    def rollback(self, request: Request) -> Response:
        kind = request.query_params.get("kind", ModelKind.HUMAN_PROXY)
        try:
            version = registry.rollback(kind)
        except registry.RegistryError as exc:
            raise FieldError("non_field_errors", exc.code, exc.detail, 409) from None
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"], url_path="reliability-diagram",
            url_name="diagram")
    def reliability_diagram(self, request: Request, pk=None):
        from django.http import FileResponse, Http404

        v = self.get_object()
        if not v.reliability_diagram:
            raise Http404
        return FileResponse(
            v.reliability_diagram.storage.open(v.reliability_diagram.name, "rb"),
            content_type="image/png",
        )
