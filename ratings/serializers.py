"""Request and response shapes. Rater-facing serializers expose opaque ids only."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from models_app.models import FaceImage

from .models import Campaign, Pair, PairLabel

# --- Staff ---------------------------------------------------------------------------------


class CampaignSerializer(serializers.ModelSerializer):
    rater_url = serializers.SerializerMethodField(help_text="Link to give raters.")
    n_pairs = serializers.SerializerMethodField()

    class Meta:
        model = Campaign
        fields = [
            "id", "name", "slug", "status", "instructions", "consent_text",
            "judgments_per_pair", "gold_rate", "attention_rate", "qualification_size",
            "pass_mark", "attention_failures_allowed", "min_response_ms", "hold_timeout_s",
            "rater_quota", "min_work_pairs", "completion_code", "completion_url",
            "screenout_code", "return_url", "rater_image", "krippendorff_alpha",
            "labels_updated", "created", "updated", "rater_url", "n_pairs",
        ]
        read_only_fields = ["id", "krippendorff_alpha", "labels_updated", "created", "updated"]

    def get_rater_url(self, obj: Campaign) -> str:
        return reverse("ratings:rate", args=[obj.slug])

    def get_n_pairs(self, obj: Campaign) -> int:
        return obj.pairs.count()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        gold = attrs.get("gold_rate", getattr(self.instance, "gold_rate", 0.0))
        attention = attrs.get("attention_rate", getattr(self.instance, "attention_rate", 0.0))
        if gold + attention > 1.0:
            raise serializers.ValidationError(
                {"gold_rate": "gold_rate + attention_rate must be at most 1."}
            )
        quota = attrs.get("rater_quota", getattr(self.instance, "rater_quota", 0))
        q_size = attrs.get("qualification_size", getattr(
            self.instance, "qualification_size", Campaign._meta.get_field("qualification_size").default))
        if quota and quota <= q_size:
            raise serializers.ValidationError({"rater_quota": (
                "must be 0 (no quota) or more than qualification_size: the completion code "
                "needs real pairs judged after qualification.")})
        probe = Campaign(**{
            f: attrs.get(f, getattr(self.instance, f, Campaign._meta.get_field(f).default))
            for f in ("status", "instructions", "consent_text")
        })
        if errors := probe.active_text_errors():
            raise serializers.ValidationError(errors)
        return attrs


class PairInSerializer(serializers.Serializer):
    image_a = serializers.UUIDField()
    image_b = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=Pair.Kind.choices, default=Pair.Kind.DEID)
    expected_same = serializers.BooleanField(required=False, allow_null=True, default=None)
    deid_job = serializers.UUIDField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs["kind"]
        if attrs["image_a"] == attrs["image_b"] and kind != Pair.Kind.ATTENTION:
            raise serializers.ValidationError(
                {"image_b": "Only attention checks may show one image twice."}
            )
        if kind == Pair.Kind.DEID and attrs.get("expected_same") is not None:
            raise serializers.ValidationError(
                {"expected_same": "A de-identification pair has no known answer."}
            )
        if kind == Pair.Kind.ATTENTION and attrs.get("expected_same") is None:
            attrs["expected_same"] = attrs["image_a"] == attrs["image_b"]
        return attrs


class PairBulkSerializer(serializers.Serializer):
    pairs = PairInSerializer(many=True, allow_empty=False, max_length=10_000)

    def validate_pairs(self, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        wanted = {p["image_a"] for p in pairs} | {p["image_b"] for p in pairs}
        found = set(FaceImage.objects.filter(pk__in=wanted, status="ok").values_list("pk", flat=True))
        missing = wanted - found
        if missing:
            raise serializers.ValidationError(
                f"{len(missing)} image id(s) do not exist or were rejected, e.g. {sorted(map(str, missing))[0]}."
            )
        return pairs


class PairOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = Pair
        fields = ["id", "image_a", "image_b", "kind", "expected_same", "deid_job_id", "active",
                  "taken", "created"]
        read_only_fields = fields


class PairLabelSerializer(serializers.ModelSerializer):
    kind = serializers.CharField(source="pair.kind", read_only=True)

    class Meta:
        model = PairLabel
        fields = ["pair", "kind", "score_a", "same", "n_judgments", "method", "updated"]
        read_only_fields = fields


class RecomputeSerializer(serializers.Serializer):
    method = serializers.ChoiceField(
        choices=PairLabel.Method.choices, default=PairLabel.Method.DAWID_SKENE
    )


class QueuedSerializer(serializers.Serializer):
    status = serializers.CharField()
    task = serializers.CharField(allow_null=True)


# --- Raters (opaque ids only: no image id, subject, job, filename or score) ----------------


class RaterAssignmentSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="Opaque assignment id.")
    phase = serializers.CharField()
    left_url = serializers.CharField(help_text="Signed, short-lived image URL.")
    right_url = serializers.CharField(help_text="Signed, short-lived image URL.")
    expires = serializers.DateTimeField()


class ProgressSerializer(serializers.Serializer):
    phase = serializers.ChoiceField(choices=["qualification", "work"])
    done = serializers.IntegerField(help_text="Judged in the current phase.")
    target = serializers.IntegerField(help_text="The current phase's count.")
    qualifying = serializers.BooleanField()
    qualification_done = serializers.IntegerField()
    qualification_target = serializers.IntegerField()
    work_done = serializers.IntegerField(help_text="Real pairs judged (no gold, no checks).")
    work_min = serializers.IntegerField(help_text="Real pairs the completion code needs.")
    work_target = serializers.IntegerField(help_text="The most real pairs this rater gets.")


class NextSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["ok", "finished", "no_work", "closed", "qualifying_wait"]
    )
    assignments = RaterAssignmentSerializer(many=True)
    progress = ProgressSerializer()
    end_url = serializers.CharField()


class JudgmentInSerializer(serializers.Serializer):
    same = serializers.BooleanField()
    confidence = serializers.IntegerField(min_value=1, max_value=4)
    response_ms = serializers.IntegerField(min_value=0, max_value=3_600_000)


class JudgmentOutSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["recorded", "duplicate"])
    rater_status = serializers.ChoiceField(choices=["ok", "blocked"])
    too_fast = serializers.BooleanField(
        help_text="Answered faster than the campaign's minimum time (flagged in QC)."
    )
    progress = ProgressSerializer()
    next = NextSerializer(allow_null=True, help_text="The next assignments (saves a round trip).")
