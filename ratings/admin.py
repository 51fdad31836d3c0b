"""Operator views of campaigns, pairs, raters and judgments. Writes go through services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import services
from .models import Assignment, Campaign, Judgment, Pair, PairLabel, Rater
from .services.gold import ensure_known_answer_pairs
from .tasks import update_campaign_labels_task


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "judgments_per_pair", "krippendorff_alpha",
                    "labels_updated", "allows_simulation", "labels_include_simulated", "created"]
    list_filter = ["status", "allows_simulation"]
    search_fields = ["name", "slug"]
    readonly_fields = ["krippendorff_alpha", "labels_updated", "labels_pending", "created",
                       "updated"]
    actions = ["recompute_labels", "make_known_answer_pairs"]

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        self._report(request, obj, ensure_known_answer_pairs(obj))

    @admin.action(description="Make missing gold and attention pairs from the campaign's sources")
    def make_known_answer_pairs(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            self._report(request, campaign, ensure_known_answer_pairs(campaign))

    def _report(self, request: HttpRequest, campaign: Campaign, result: dict[str, Any]) -> None:
        added = {k: n for k, n in result["added"].items() if n}
        if added:
            shown = ", ".join(f"{n} {k}" for k, n in added.items())
            self.message_user(request, f"{campaign}: added {shown} pairs.")
        if result["reason"]:
            self.message_user(request, f"{campaign}: {result['reason']}.", messages.WARNING)

    @admin.action(description="Recompute labels now (queued on the cpu worker)")
    def recompute_labels(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        for campaign in queryset:
            update_campaign_labels_task.delay(campaign.pk)
        self.message_user(request, f"Queued {queryset.count()} recomputation(s).")


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "kind", "expected_same", "taken", "active", "created"]
    list_filter = ["kind", "active", "campaign"]
    raw_id_fields = ["image_a", "image_b"]
    readonly_fields = ["taken"]


@admin.register(Rater)
class RaterAdmin(admin.ModelAdmin):
    list_display = ["public_id", "campaign", "source", "simulated", "qualified", "blocked",
                    "blocked_reason", "judgments_count", "gold_correct", "gold_count",
                    "attention_failed", "too_fast_count", "reliability"]
    list_filter = ["campaign", "source", "simulated", "qualified", "blocked"]
    search_fields = ["public_id", "external_id"]
    readonly_fields = [f.name for f in Rater._meta.fields if f.name not in ("qualified",)]
    actions = ["block", "unblock"]

    @admin.action(description="Block (judgments kept, excluded from labels)")
    def block(self, request: HttpRequest, queryset: QuerySet[Rater]) -> None:
        for rater in queryset:
            services.block_rater(rater.pk, "operator")
        self.message_user(request, f"Blocked {queryset.count()} rater(s).", messages.WARNING)

    @admin.action(description="Unblock")
    def unblock(self, request: HttpRequest, queryset: QuerySet[Rater]) -> None:
        for rater in queryset:
            services.unblock_rater(rater.pk)
        self.message_user(request, f"Unblocked {queryset.count()} rater(s).")


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["public_id", "campaign", "rater", "pair", "phase", "state", "issued",
                    "expires"]
    list_filter = ["state", "phase", "campaign"]
    raw_id_fields = ["rater", "pair"]

    def has_change_permission(self, request: HttpRequest, obj: Assignment | None = None) -> bool:
        return False  # state changes only through the assignment service


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "rater", "simulated", "pair", "same", "confidence",
                    "response_ms", "correct", "too_fast", "created"]
    list_filter = ["campaign", ("rater__simulated", admin.BooleanFieldListFilter), "too_fast",
                   "correct"]
    list_select_related = ["rater"]
    raw_id_fields = ["assignment", "rater", "pair", "left_image"]

    @admin.display(boolean=True, description="simulated", ordering="rater__simulated")
    def simulated(self, obj: Judgment) -> bool:
        return obj.rater.simulated

    def has_change_permission(self, request: HttpRequest, obj: Judgment | None = None) -> bool:
        return False


@admin.register(PairLabel)
class PairLabelAdmin(admin.ModelAdmin):
    list_display = ["pair", "score_a", "same", "n_judgments", "method", "updated"]
    list_filter = ["method"]
    raw_id_fields = ["pair"]
