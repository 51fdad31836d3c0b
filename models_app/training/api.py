"""REST API for the human proxy: training runs and the model registry."""

from __future__ import annotations

from django.http import FileResponse, Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from . import registry
from .models import ModelKind, ModelVersion, TrainingRun
from .serializers import (
    ModelVersionSerializer,
    PromoteSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)
from .services import request_training_run


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
        version = registry.promote(self.get_object(), force=body.validated_data["force"])
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    @action(detail=False, methods=["post"])
    def rollback(self, request: Request) -> Response:
        version = registry.rollback(request.query_params.get("kind", ModelKind.HUMAN_PROXY))
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"], url_path="reliability-diagram", url_name="diagram")
    def reliability_diagram(self, request: Request, pk=None):
        v = self.get_object()
        if not v.reliability_diagram:
            raise Http404
        return FileResponse(
            v.reliability_diagram.storage.open(v.reliability_diagram.name, "rb"),
            content_type="image/png",
        )
