"""REST API of closed-loop rounds: start, follow, re-stage, cancel, and the report's plot."""

from __future__ import annotations

from django.http import FileResponse, Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from deidplatform.permissions import RolePermission

from . import services
from .models import Round
from .serializers import RoundCreateSerializer, RoundSerializer, StageSerializer


class RoundViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Round.objects.select_related(
        "campaign", "proxy_before", "model_version", "training_run"
    ).order_by("-created")
    serializer_class = RoundSerializer
    parser_classes = [JSONParser]
    permission_classes = [RolePermission]
    _change = ["models_app.change_round"]
    action_perms = {"stage": _change, "cancel": _change, "report_plot": ["models_app.view_round"]}

    @extend_schema(request=RoundCreateSerializer, responses={202: RoundSerializer})
    def create(self, request: Request) -> Response:
        """Start a round (or a series: ``config.rounds_left``); the beat task advances it."""
        body = RoundCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rnd = services.start_round(series=body.validated_data.get("series"),
                                   config=body.validated_data["config"])
        return Response(RoundSerializer(rnd).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=StageSerializer, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def stage(self, request: Request, pk=None) -> Response:
        """Run the round again from one stage (that stage alone, then onwards)."""
        body = StageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rnd = services.rerun_stage(self.get_object(), body.validated_data["stage"])
        return Response(RoundSerializer(rnd).data)

    @extend_schema(request=None, responses={200: RoundSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        rnd = services.cancel_round(self.get_object())
        return Response(RoundSerializer(rnd).data)

    @extend_schema(responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"], url_path="report-plot", url_name="report-plot")
    def report_plot(self, request: Request, pk=None):
        rnd = self.get_object()
        if not rnd.report_plot:
            raise Http404
        return FileResponse(rnd.report_plot.storage.open(rnd.report_plot.name, "rb"),
                            content_type="image/png")
