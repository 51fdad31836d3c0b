from django.contrib import admin
from django.utils.html import format_html

from models_app.faces.admin import thumb

from .models import DeidIteration, DeidJob


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
        out = thumb(obj.output, 150) if obj.output_id else "-"
        return format_html("{} {}", thumb(obj.source, 150), out)

    def has_add_permission(self, request) -> bool:
        return False
