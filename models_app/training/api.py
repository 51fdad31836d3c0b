"""REST API for the human proxy: training runs and the model registry."""

from __future__ import annotations

from django.http import FileResponse, Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.errors import INVALID, AppError
from deidplatform.permissions import RolePermission

from . import registry
from .models import ModelKind, ModelVersion, TrainingRun
from .serializers import (
    ModelVersionSerializer,
    PromoteSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)
from .services import cancel_training_run, request_generator_run, request_training_run


class TrainingRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = TrainingRun.objects.select_related("model_version").order_by("-created")
    serializer_class = TrainingRunSerializer
    parser_classes = [JSONParser]
    permission_classes = [RolePermission]
    action_perms = {"cancel": ["models_app.change_trainingrun"]}

    @extend_schema(request=TrainingRunCreateSerializer, responses={202: TrainingRunSerializer})
    def create(self, request: Request) -> Response:
        body = TrainingRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["kind"] == ModelKind.GENERATOR:
            run = request_generator_run(config=data["config"])
        else:
            run = request_training_run(config=data["config"])
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: TrainingRunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Cancel a queued or running run (a running one stops after its epoch)."""
        run = cancel_training_run(self.get_object())
        return Response(TrainingRunSerializer(run).data)


class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    queryset = ModelVersion.objects.select_related("parent").order_by("kind", "-number")
    serializer_class = ModelVersionSerializer
    parser_classes = [JSONParser]
    permission_classes = [RolePermission]
    _change = ["models_app.change_modelversion"]
    action_perms = {"promote": _change, "rollback": _change}

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
        kind = request.query_params.get("kind", ModelKind.HUMAN_PROXY)
        if kind not in ModelKind.values:
            raise AppError(INVALID, f"unknown kind; one of {list(ModelKind.values)}.",
                           field="kind")
        version = registry.rollback(kind)
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
