from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from .models import ErasureRecord, FaceImage, Subject


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
    kind = serializers.ChoiceField(
        choices=[FaceImage.Kind.SOURCE, FaceImage.Kind.DONOR], required=False,
        default=FaceImage.Kind.SOURCE,
        help_text="source (default), or donor: a consented or licensed photo for the disguise "
        "parameterisation's donor pool, stored without a subject.",
    )


class SubjectSerializer(serializers.ModelSerializer):
    n_images = serializers.IntegerField(read_only=True, help_text="Stored images (sources).")

    class Meta:
        model = Subject
        fields = ["id", "label", "source", "created", "n_images"]
        read_only_fields = fields


class ErasureRecordSerializer(serializers.ModelSerializer):
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Rows deleted or scrubbed, by kind."
    )

    class Meta:
        model = ErasureRecord
        fields = ["id", "kind", "subject_hash", "actor_name", "counts", "created"]
        read_only_fields = fields
