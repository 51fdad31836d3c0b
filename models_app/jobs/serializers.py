from __future__ import annotations

from rest_framework import serializers

from .models import DeidIteration, DeidJob


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

    verdict = serializers.SerializerMethodField()

    class Meta:
        model = DeidJob
        fields = [
            "id", "status", "verdict", "source", "output", "batch", "campaign", "proxy_version", "params",
            "stop_reason", "iterations_done", "final_score_a", "final_score_b", "current_score_a",
            "final_detail", "ladder", "error", "attempts", "created", "started", "finished",
        ]
        read_only_fields = fields

    def get_verdict(self, obj: DeidJob) -> str:
        """The status with what it rests on: a success by a prior proxy is never shown as
        a plain "succeeded" (its score-A says little about people)."""
        return obj.verdict


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
        help_text="Job parameters (DeidConfig): parameterisation style|pixels|disguise "
        "(disguise needs a donor pool; disguise_ranges overrides its bounds), blend "
        "head|rectangle (how the output goes into the photo; head), mode "
        "restart|evolve, tau_a (0.3), tau_b (0.5), lr, steps_per_iteration (1), "
        "max_iterations (90), convergence_window (20), convergence_eps (0.005), ensemble "
        "{cfrus, aggregation}, loss {lambda0, lambda_taps, lambda_a, ...}, eot {...}, seed, "
        "ladder (score-A thresholds whose first iterate below is stored and judged too; "
        "[0.8, 0.6, 0.4]; [] turns it off); method iterative (default) | generator (one pass "
        "of the promoted generator) | hybrid (the loop from the generator's output).",
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
