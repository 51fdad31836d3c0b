"""REST API for de-identification jobs: start one (an image id or an upload), follow its
trajectory, cancel it; ``batch`` starts one job per source image of a set of subjects."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.permissions import RolePermission
from models_app.faces.selectors import image_by_id, images_by_id, subjects_by_id
from models_app.faces.services import ingest_upload

from .models import DeidJob
from .params import parse_params
from .selectors import campaign_by_id
from .serializers import (
    DeidBatchCreateSerializer,
    DeidJobCreateSerializer,
    DeidJobDetailSerializer,
    DeidJobSerializer,
)
from .services import cancel_job, check_job_can_start, create_batch, create_deid_job


class DeidJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = DeidJob.objects.select_related("proxy_version").order_by("-created")
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    permission_classes = [RolePermission]
    action_perms = {"cancel": ["models_app.change_deidjob"], "batch": ["models_app.add_deidjob"]}

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
        params = parse_params(data.get("params"))
        campaign = campaign_by_id(data.get("campaign"))
        check_job_can_start(params, campaign)  # before an upload is stored
        if data.get("image"):
            source = image_by_id(data["image"])
        else:
            source = ingest_upload(data["file"], subject_label=data.get("subject")).image
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
        batch = create_batch(
            subjects=subjects_by_id(data["subjects"]), images=images_by_id(data["images"]),
            params=data.get("params"), campaign=campaign_by_id(data.get("campaign")),
            user=request.user,
        )
        jobs = batch.jobs.select_related("proxy_version").order_by("created")
        return Response(DeidJobSerializer(jobs, many=True).data, status=status.HTTP_201_CREATED)
