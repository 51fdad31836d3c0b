"""Domain errors: one status per code, the same status on every route."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from deidplatform.errors import AppError, declared_codes, error_code, status_for


def test_a_code_has_one_status():
    assert error_code("test_only_code", 418) == "test_only_code"
    assert error_code("test_only_code", 418) == "test_only_code"  # same status: fine
    with pytest.raises(RuntimeError, match="declared with 418 and 400"):
        error_code("test_only_code", 400)
    assert status_for("never_declared") == 400


def test_domain_codes_are_declared_with_their_statuses():
    import models_app.faces.errors  # noqa: F401
    import models_app.jobs.errors  # noqa: F401
    import models_app.training.errors  # noqa: F401

    codes = declared_codes()
    assert codes["no_face"] == 422 and codes["file_too_large"] == 413
    assert codes["run_in_progress"] == 409 and codes["no_promoted_proxy"] == 409
    assert codes["not_found"] == 404
    err = AppError("no_face", "No face.", field="file", extra={"reason": "no_face"})
    assert err.status == 422
    assert err.body() == {
        "reason": "no_face", "errors": [{"field": "file", "code": "no_face", "detail": "No face."}]
    }


def _blank_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.django_db
def test_an_upload_without_a_face_answers_alike_on_both_upload_routes(
    staff_client, django_capture_on_commit_callbacks
):
    """The same rejection (no face) through the images API and through a job upload (with a
    promoted proxy: without one, the job route refuses before reading the file)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from models_app.models import FaceImage
    from tests.models_app.fixtures import promote_untrained_proxy

    with django_capture_on_commit_callbacks():
        promote_untrained_proxy()

    r1 = staff_client.post(
        "/api/images/", {"file": SimpleUploadedFile("x.png", _blank_png())}, format="multipart"
    )
    r2 = staff_client.post(
        "/api/deid-jobs/", {"file": SimpleUploadedFile("x.png", _blank_png())},
        format="multipart",
    )
    assert r1.status_code == r2.status_code == 422
    assert r1.json()["errors"] == r2.json()["errors"]
    assert r1.json()["errors"][0]["code"] == "no_face"
    assert not FaceImage.objects.exists()
