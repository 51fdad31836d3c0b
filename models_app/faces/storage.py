"""Private storage for face images: files on disk with no public URL.

Files are reachable only through ``models_app.faces.views.serve_face_image`` (permission-checked).
"""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage
from django.db import transaction
from django.utils.deconstruct import deconstructible


@deconstructible
class PrivateStorage(FileSystemStorage):
    def __init__(self, **kwargs) -> None:
        # No explicit location: FileSystemStorage then follows MEDIA_ROOT (= PRIVATE_MEDIA_ROOT),
        # including override_settings in tests.
        kwargs.setdefault("file_permissions_mode", 0o600)
        kwargs.setdefault("directory_permissions_mode", 0o700)
        super().__init__(**kwargs)

    def url(self, name: str | None) -> str:  # pragma: no cover - guard
        raise NotImplementedError("Private files have no URL; use the permission-checked view.")


def delete_files_after_commit(fields) -> None:
    """Remove the files of a deleted row once the delete commits (deletion that deletes)."""
    names = [(f.storage, f.name) for f in fields if f and f.name]

    def _remove() -> None:
        for storage, name in names:
            storage.delete(name)

    transaction.on_commit(_remove)
