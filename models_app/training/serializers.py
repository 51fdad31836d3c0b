from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from .models import ModelKind, ModelVersion, TrainingRun
from .services import RUN_DEFAULTS


class TrainingRunSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "kind", "status", "trigger", "config", "history", "stop_reason", "error",
            "labels_used", "created", "started", "finished", "model_version",
        ]
        read_only_fields = fields

    def get_model_version(self, obj) -> int | None:
        v = getattr(obj, "model_version", None)
        return v.number if v is not None else None


class TrainingRunCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=ModelKind.choices, default=ModelKind.HUMAN_PROXY,
        help_text="human_proxy (default) or generator (its config: "
        "training.generator_runner.GENERATOR_RUN_DEFAULTS).",
    )
    config = serializers.JSONField(required=False, default=dict)

    def validate(self, attrs):
        if attrs["kind"] == ModelKind.GENERATOR:
            return attrs  # validated by the generator run's service, naming the key
        attrs["config"] = self._proxy_config(attrs["config"])
        return attrs

    def validate_config(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("config must be a JSON object.")
        return value

    def _proxy_config(self, value):
        unknown = set(value) - set(RUN_DEFAULTS)
        if unknown:
            raise serializers.ValidationError({"config": [f"unknown keys: {sorted(unknown)}"]})
        if "train" in value:
            from models_app.proxy.train import TrainConfig  # torch: not in every web process

            try:
                TrainConfig.from_dict(value["train"])
            except (TypeError, ValueError) as exc:
                raise serializers.ValidationError({"config": [f"train: {exc}"]}) from None
        return value


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.IntegerField(source="parent.number", read_only=True, allow_null=True)
    training_run = serializers.UUIDField(source="training_run_id", read_only=True, allow_null=True)
    reliability_diagram_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "kind", "number", "status", "is_prior", "sha256", "config", "metrics", "gate",
            "battery", "parent", "training_run", "created", "promoted_at", "reliability_diagram_url",
        ]
        read_only_fields = fields

    def get_reliability_diagram_url(self, obj) -> str | None:
        if not obj.reliability_diagram:
            return None
        return reverse("api-model-version-diagram", args=[obj.pk])


class PromoteSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        default=False, help_text="Promote even though the version failed its gate."
    )
