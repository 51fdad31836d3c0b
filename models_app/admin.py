from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from .models import DeidIteration, DeidJob, FaceImage, ModelVersion, Subject, TrainingRun


class FaceImageInline(admin.TabularInline):
    model = FaceImage
    fk_name = "subject"
    extra = 0
    fields = ("thumb", "kind", "status", "width", "height", "created")
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="chip")
    def thumb(self, obj: FaceImage) -> str:
        return _thumb(obj, 48)


def _thumb(obj: FaceImage, size: int) -> str:
    if not obj.pk or not obj.chip:
        return "-"
    url = reverse("models_app:face-file", args=[obj.pk, "chip"])
    return format_html('<img src="{}" width="{}" height="{}" alt="">', url, size, size)


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = ("label", "source", "n_images", "created")
    search_fields = ("label",)
    inlines = [FaceImageInline]

    @admin.display(description="images")
    def n_images(self, obj: Subject) -> int:
        return obj.images.count()


@admin.register(FaceImage)
class FaceImageAdmin(admin.ModelAdmin):
    list_display = ("thumb", "id", "subject", "kind", "status", "multi_face", "width", "height", "created")
    list_filter = ("kind", "status", "multi_face")
    search_fields = ("id", "sha256", "subject__label")
    readonly_fields = (
        "preview", "id", "sha256", "width", "height", "box", "landmarks", "n_faces",
        "multi_face", "created",
    )
    # The file fields would render storage URLs; private files have none (see preview).
    exclude = ("file", "chip")
    raw_id_fields = ("subject", "parent")

    @admin.display(description="chip")
    def thumb(self, obj: FaceImage) -> str:
        return _thumb(obj, 64)

    @admin.display(description="preview")
    def preview(self, obj: FaceImage) -> str:
        if not obj.pk:
            return "-"
        url = reverse("models_app:face-file", args=[obj.pk, "image"])
        return format_html('<img src="{}" style="max-width:320px" alt=""> {}', url, _thumb(obj, 150))

    def has_add_permission(self, request) -> bool:
        return False  # images come in through ingest (API, import_faces), never raw


# --- Networks and jobs -------------------------------------------------------------------------


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "trigger", "stop_reason", "labels_used", "created", "finished")
    list_filter = ("status", "trigger", "kind")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False  # runs are requested through the API or by the schedule


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "number", "status", "is_prior", "held_out_auc", "created", "promoted_at")
    list_filter = ("kind", "status", "is_prior")
    readonly_fields = [f.name for f in ModelVersion._meta.fields if f.name not in ("file", "reliability_diagram")]
    exclude = ("file", "reliability_diagram")
    actions = ["promote_selected", "rollback_kind"]

    @admin.display(description="held-out AUC")
    def held_out_auc(self, obj: ModelVersion):
        return (obj.metrics.get("held_out") or {}).get("auc")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Promote (only versions that passed their gate)")
    def promote_selected(self, request, queryset):
        from .registry import RegistryError, promote

        for v in queryset[:1]:
            try:
                promote(v)
                self.message_user(request, f"Promoted {v}.")
            except RegistryError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)

    @admin.action(description="Roll back to the previously promoted version")
    def rollback_kind(self, request, queryset):
        from .registry import RegistryError, rollback

        kinds = set(queryset.values_list("kind", flat=True))
        for kind in kinds:
            try:
                v = rollback(kind)
                self.message_user(request, f"Rolled back to {v}.")
            except RegistryError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)


class DeidIterationInline(admin.TabularInline):
    model = DeidIteration
    extra = 0
    fields = ("index", "score_a", "score_b", "seconds")
    readonly_fields = fields
    can_delete = False


@admin.register(DeidJob)
class DeidJobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "stop_reason", "iterations_done", "final_score_a", "final_score_b", "created")
    list_filter = ("status", "stop_reason")
    readonly_fields = [f.name for f in DeidJob._meta.fields if f.name != "checkpoint"] + ["images"]
    exclude = ("checkpoint",)
    inlines = [DeidIterationInline]

    @admin.display(description="source | output")
    def images(self, obj: DeidJob) -> str:
        out = _thumb(obj.output, 150) if obj.output_id else "-"
        return format_html("{} {}", _thumb(obj.source, 150), out)

    def has_add_permission(self, request) -> bool:
        return False
