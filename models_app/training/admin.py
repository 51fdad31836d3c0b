from django.contrib import admin, messages

from deidplatform.errors import AppError

from . import registry
from .models import ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "trigger", "stop_reason", "labels_used", "created", "finished")
    list_filter = ("status", "trigger", "kind")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False  # runs are requested through the API or by the schedule


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "number", "status", "is_prior", "held_out_auc",
                    "held_out_success", "battery_verdict", "created", "promoted_at")
    list_filter = ("kind", "status", "is_prior")
    readonly_fields = [f.name for f in ModelVersion._meta.fields if f.name not in ("file", "reliability_diagram")]
    exclude = ("file", "reliability_diagram")
    actions = ["promote_selected", "rollback_kind"]

    @admin.display(description="held-out AUC")
    def held_out_auc(self, obj: ModelVersion):
        return (obj.metrics.get("held_out") or {}).get("auc")

    @admin.display(description="held-out success (generator)")
    def held_out_success(self, obj: ModelVersion):
        return obj.metrics.get("held_out_success_rate")

    @admin.display(description="perceptual battery")
    def battery_verdict(self, obj: ModelVersion) -> str:
        if not obj.battery:
            return "not run"
        failed = obj.battery.get("failed") or []
        return "passed" if not failed else "failed: " + ", ".join(failed)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Promote (only versions that passed their gate)")
    def promote_selected(self, request, queryset):
        for v in queryset[:1]:
            try:
                registry.promote(v)
                self.message_user(request, f"Promoted {v}.")
            except AppError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)

    @admin.action(description="Roll back to the previously promoted version")
    def rollback_kind(self, request, queryset):
        kinds = set(queryset.values_list("kind", flat=True))
        for kind in kinds:
            try:
                v = registry.rollback(kind)
                self.message_user(request, f"Rolled back to {v}.")
            except AppError as exc:
                self.message_user(request, exc.detail, level=messages.ERROR)
