from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from . import selectors
from .models import Round
from .services import STAGES


class RoundSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    campaign = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    batch = serializers.PrimaryKeyRelatedField(read_only=True)
    training_run = serializers.PrimaryKeyRelatedField(read_only=True)
    proxy_before = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()
    faces = serializers.SerializerMethodField()
    report_plot_url = serializers.SerializerMethodField()
    previous = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Round
        fields = [
            "id", "series", "number", "previous", "status", "stage", "config", "faces", "batch",
            "campaign", "proxy_before", "training_run", "model_version", "stage_times",
            "report", "report_plot_url", "progress", "error", "created", "finished",
        ]
        read_only_fields = fields

    def get_progress(self, obj: Round) -> dict:
        return selectors.progress(obj)

    def get_proxy_before(self, obj: Round) -> int | None:
        return obj.proxy_before.number if obj.proxy_before_id else None

    def get_model_version(self, obj: Round) -> int | None:
        return obj.model_version.number if obj.model_version_id else None

    def get_faces(self, obj: Round) -> int:
        return obj.faces.count()

    def get_report_plot_url(self, obj: Round) -> str | None:
        if not obj.report_plot:
            return None
        return reverse("round-report-plot", args=[obj.pk])


class RoundCreateSerializer(serializers.Serializer):
    series = serializers.SlugField(max_length=64, required=False)
    config = serializers.JSONField(required=False, default=dict)


class StageSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=list(STAGES))
