from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .erasure import erase_images, erase_subject
from .models import ErasureRecord, FaceImage, Subject


class FaceImageInline(admin.TabularInline):
    model = FaceImage
    fk_name = "subject"
    extra = 0
    fields = ("thumb", "kind", "status", "width", "height", "created")
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="chip")
    def thumb(self, obj: FaceImage) -> str:
        return thumb(obj, 48)


def thumb(obj: FaceImage, size: int) -> str:
    """A chip thumbnail through the permission-checked view (admin pages are staff only)."""
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

    # Deleting in the admin is an erasure too: no residue, an audit record.
    def delete_model(self, request, obj: Subject) -> None:
        erase_subject(obj, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for subject in queryset:
            erase_subject(subject, actor=request.user)


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
        return thumb(obj, 64)

    @admin.display(description="preview")
    def preview(self, obj: FaceImage) -> str:
        if not obj.pk:
            return "-"
        url = reverse("models_app:face-file", args=[obj.pk, "image"])
        return format_html('<img src="{}" style="max-width:320px" alt=""> {}', url, thumb(obj, 150))

    def has_add_permission(self, request) -> bool:
        return False  # images come in through ingest (API, import_faces), never raw

    def delete_model(self, request, obj: FaceImage) -> None:
        erase_images([obj], actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        erase_images(list(queryset), actor=request.user)


@admin.register(ErasureRecord)
class ErasureRecordAdmin(admin.ModelAdmin):
    """The erasure audit: read-only (an audit trail nobody edits)."""

    list_display = ("created", "kind", "actor_name", "counts", "subject_hash")
    list_filter = ("kind",)
    search_fields = ("subject_hash",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
