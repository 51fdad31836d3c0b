import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from . import selectors
from .models import Round


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ("series", "number", "stage", "status", "crowd", "success", "created")
    list_filter = ("status", "stage", "series")
    exclude = ("faces", "report_plot")
    readonly_fields = [f.name for f in Round._meta.fields if f.name != "report_plot"] + [
        "progress", "plot"]

    @admin.display(description="crowd")
    def crowd(self, obj: Round) -> str:
        # Simulated judgments are said to be simulated wherever they are shown.
        return "simulated" if obj.config.get("simulate") else "people"

    @admin.display(description="success")
    def success(self, obj: Round):
        return (obj.report.get("success") or {}).get("rate")

    @admin.display(description="progress")
    def progress(self, obj: Round) -> str:
        return format_html("<pre>{}</pre>", json.dumps(selectors.progress(obj), indent=1))

    @admin.display(description="report plot")
    def plot(self, obj: Round) -> str:
        if not obj.report_plot:
            return "-"
        return format_html('<img src="{}" style="max-width:900px">',
                           reverse("round-report-plot", args=[obj.pk]))

    def has_add_permission(self, request) -> bool:
        return False  # rounds start from run_rounds, the API or the schedule
