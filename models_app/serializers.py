from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from .models import DeidIteration, DeidJob, FaceImage, ModelVersion, TrainingRun


class FaceImageSerializer(serializers.ModelSerializer):
    subject = serializers.UUIDField(source="subject_id", read_only=True, allow_null=True)
    parent = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)
    image_url = serializers.SerializerMethodField()
    chip_url = serializers.SerializerMethodField()

    class Meta:
        model = FaceImage
        fields = [
            "id", "status", "reason", "kind", "subject", "parent", "width", "height", "sha256",
            "box", "landmarks", "n_faces", "multi_face", "created", "image_url", "chip_url",
        ]
        read_only_fields = fields

    def get_image_url(self, obj: FaceImage) -> str:
        return reverse("models_app:face-file", args=[obj.id, "image"])

    def get_chip_url(self, obj: FaceImage) -> str:
        return reverse("models_app:face-file", args=[obj.id, "chip"])


class FaceImageUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    subject = serializers.CharField(
        required=False, max_length=200, help_text="Pseudonymous subject label (optional)."
    )


class DeidIterationSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeidIteration
        fields = ["index", "score_a", "score_b", "loss", "seconds"]
        read_only_fields = fields


class DeidJobSerializer(serializers.ModelSerializer):
    source = serializers.UUIDField(source="source_id", read_only=True)
    output = serializers.UUIDField(source="output_id", read_only=True, allow_null=True)
    batch = serializers.UUIDField(source="batch_id", read_only=True, allow_null=True)
    campaign = serializers.IntegerField(source="campaign_id", read_only=True, allow_null=True)
    proxy_version = serializers.IntegerField(
        source="proxy_version.number", read_only=True, allow_null=True
    )

    class Meta:
        model = DeidJob
        fields = [
            "id", "status", "source", "output", "batch", "campaign", "proxy_version", "params",
            "stop_reason", "iterations_done", "final_score_a", "final_score_b", "current_score_a",
            "final_detail", "error", "attempts", "created", "started", "finished",
        ]
        read_only_fields = fields


class DeidJobDetailSerializer(DeidJobSerializer):
    trajectory = DeidIterationSerializer(source="iterations", many=True, read_only=True)

    class Meta(DeidJobSerializer.Meta):
        fields = [*DeidJobSerializer.Meta.fields, "trajectory"]
        read_only_fields = fields


class DeidJobCreateSerializer(serializers.Serializer):
    image = serializers.UUIDField(required=False, help_text="A source FaceImage id.")
    file = serializers.FileField(required=False, help_text="Or upload a photo (multipart).")
    subject = serializers.CharField(required=False, max_length=200)
    campaign = serializers.IntegerField(
        required=False, help_text="Put the (source, output) pair into this campaign."
    )
    params = serializers.JSONField(
        required=False,
        help_text="Job parameters (DeidConfig): parameterisation style|pixels, mode "
        "restart|evolve, tau_a (0.3), tau_b (0.5), lr, steps_per_iteration (1), "
        "max_iterations (90), convergence_window (20), convergence_eps (0.005), ensemble "
        "{cfrus, aggregation}, loss {lambda0, lambda_taps, lambda_a, ...}, eot {...}, seed.",
    )

    def validate(self, attrs):
        if bool(attrs.get("image")) == bool(attrs.get("file")):
            raise serializers.ValidationError(
                {"image": ["Give exactly one of image (an id) or file (an upload)."]}
            )
        return attrs


class DeidBatchCreateSerializer(serializers.Serializer):
    subjects = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    images = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    campaign = serializers.IntegerField(required=False)
    params = serializers.JSONField(required=False)

    def validate(self, attrs):
        if not attrs["subjects"] and not attrs["images"]:
            raise serializers.ValidationError({"subjects": ["Name subjects or images."]})
        return attrs


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
    config = serializers.JSONField(required=False, default=dict)

    def validate_config(self, value):
        from .training import RUN_DEFAULTS

        if not isinstance(value, dict):
            raise serializers.ValidationError("config must be a JSON object.")
        unknown = set(value) - set(RUN_DEFAULTS)
        if unknown:
            raise serializers.ValidationError(f"unknown keys: {sorted(unknown)}")
        if "train" in value:
            from .proxy.train import TrainConfig

            try:
                TrainConfig.from_dict(value["train"])
            except (TypeError, ValueError) as exc:
                raise serializers.ValidationError(f"train: {exc}") from None
        return value


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.IntegerField(source="parent.number", read_only=True, allow_null=True)
    training_run = serializers.UUIDField(source="training_run_id", read_only=True, allow_null=True)
    reliability_diagram_url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "kind", "number", "status", "is_prior", "sha256", "config", "metrics", "gate",
            "parent", "training_run", "created", "promoted_at", "reliability_diagram_url",
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
