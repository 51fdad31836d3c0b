"""POST /api/images/ and the ingest service: good files, bad files, nothing left behind."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models_app.models import FaceImage, Subject

pytestmark = pytest.mark.django_db


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _post(client, data: bytes, name: str = "upload.bin", **extra):
    from django.core.files.uploadedfile import SimpleUploadedFile

    payload = {"file": SimpleUploadedFile(name, data), **extra}
    return client.post("/api/images/", payload, format="multipart")


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def test_upload_real_face_stores_row_and_private_files(staff_client, face_jpeg, settings):
    r = _post(staff_client, face_jpeg, "Aaron_Peirsol_0001.jpg", subject="subject-001")
    assert r.status_code == 201, r.content
    body = r.json()
    img = FaceImage.objects.get(pk=body["id"])
    assert body["status"] == "ok" and img.status == "ok"
    assert (img.width, img.height) == (250, 250)
    assert len(img.landmarks) == 5 and len(img.box) == 4
    assert img.subject.label == "subject-001"
    # Opaque names: the uploaded filename and subject appear nowhere in storage.
    names = [p.name for p in _files(Path(settings.MEDIA_ROOT))]
    assert sorted(names) == sorted([f"{img.id.hex}.png"] * 2)
    assert "Aaron" not in r.content.decode()
    chip = Image.open(img.chip.path)
    assert chip.size == (150, 150) and chip.mode == "RGB"
    stored = Image.open(img.file.path)
    assert stored.format == "PNG" and not stored.info.get("exif")
    assert oct(os.stat(img.file.path).st_mode & 0o777) == "0o600"


def test_duplicate_upload_adds_nothing(staff_client, face_jpeg, settings):
    first = _post(staff_client, face_jpeg).json()
    r = _post(staff_client, face_jpeg)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert r.json()["id"] == first["id"]
    assert FaceImage.objects.count() == 1
    assert len(_files(Path(settings.MEDIA_ROOT))) == 2


def _bomb() -> bytes:
    # A small PNG that declares a huge canvas.
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], loop=0)
    return buf.getvalue()


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make,code,status",
    [
        (lambda face: b"this is not an image at all", "not_an_image", 400),
        (lambda face: b"", "empty_file", 400),
        (lambda face: face[: len(face) // 2], "corrupt_image", 400),
        (lambda face: _bomb(), "too_many_pixels", 400),
        (lambda face: _animated_gif(), "animated_image", 400),
        (lambda face: _png16(), "unsupported_bit_depth", 400),
        (lambda face: _png(np.full((200, 200, 3), 128, np.uint8)), "no_face", 422),
    ],
    ids=["non-image", "empty", "truncated-jpeg", "bomb", "animated-gif", "png16", "no-face"],
)
def test_bad_files_get_clear_errors_and_leave_nothing(
    staff_client, face_jpeg, settings, make, code, status
):
    settings.DEID_MAX_IMAGE_PIXELS = 50_000_000 if code != "too_many_pixels" else 10_000_000
    before = FaceImage.objects.count()
    r = _post(staff_client, make(face_jpeg))
    assert r.status_code == status, r.content
    body = r.json()
    assert body["errors"][0]["field"] == "file"
    assert body["errors"][0]["code"] == code
    assert body["errors"][0]["detail"]
    assert FaceImage.objects.count() == before
    assert _files(Path(settings.MEDIA_ROOT)) == []


def test_oversize_upload_is_413(staff_client, face_jpeg, settings):
    settings.DEID_MAX_UPLOAD_BYTES = 1000
    r = _post(staff_client, face_jpeg)
    assert r.status_code == 413
    assert r.json()["errors"][0] == {
        "field": "file", "code": "file_too_large", "detail": r.json()["errors"][0]["detail"]
    }
    assert FaceImage.objects.count() == 0 and _files(Path(settings.MEDIA_ROOT)) == []


def test_missing_file_field_names_the_field(staff_client):
    r = staff_client.post("/api/images/", {}, format="multipart")
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "file"


def test_cmyk_jpeg_is_accepted_after_conversion(staff_client, face_jpeg):
    rgb = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, format="JPEG", quality=95)
    r = _post(staff_client, buf.getvalue())
    assert r.status_code == 201, r.content
    stored = Image.open(FaceImage.objects.get(pk=r.json()["id"]).file.path)
    assert stored.mode == "RGB"


def test_exif_orientation_is_applied_and_metadata_stripped(staff_client, face_jpeg):
    img = Image.open(io.BytesIO(face_jpeg)).convert("RGB").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CW on display: undoes our rotate(90)
    exif[0x010E] = "private description"
    buf = io.BytesIO()
    img.crop((0, 0, 250, 200)).save(buf, format="JPEG", exif=exif, quality=95)
    r = _post(staff_client, buf.getvalue())
    assert r.status_code == 201, r.content
    face = FaceImage.objects.get(pk=r.json()["id"])
    assert (face.width, face.height) == (200, 250)  # orientation applied: upright again
    raw = Path(face.file.path).read_bytes()
    assert b"private description" not in raw and b"Exif" not in raw


def test_several_faces_flagged_or_rejected_by_setting(staff_client, face_jpeg, settings):
    face = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    canvas = Image.new("RGB", (600, 260), (90, 90, 90))
    canvas.paste(face, (0, 5))
    canvas.paste(face.resize((200, 200)), (340, 30))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    data = buf.getvalue()
    settings.DEID_MULTI_FACE_POLICY = "reject"
    r = _post(staff_client, data)
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "several_faces"
    settings.DEID_MULTI_FACE_POLICY = "flag"
    r = _post(staff_client, data)
    assert r.status_code == 201
    img = FaceImage.objects.get(pk=r.json()["id"])
    assert img.multi_face and img.n_faces == 2
    # The more central face is kept: the left face is centred near x=125, the right one
    # near x=440; the image centre is x=300, so the right one is nearer.
    assert img.box[0] > 300


def test_anonymous_and_non_staff_cannot_upload_or_list(client, django_user_model, face_jpeg):
    assert _post(client, face_jpeg).status_code in (401, 403)
    user = django_user_model.objects.create_user("rater", password="pw")
    client.force_login(user)
    assert _post(client, face_jpeg).status_code == 403
    assert client.get("/api/images/").status_code == 403
    assert FaceImage.objects.count() == 0 and Subject.objects.count() == 0


def test_failure_while_storing_leaves_no_file(staff_client, face_jpeg, settings, monkeypatch):
    from models_app.faces import services

    def boom(*a, **k):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services.FaceImage, "save", boom)
    with pytest.raises(RuntimeError):
        services.ingest_image(face_jpeg)
    assert _files(Path(settings.MEDIA_ROOT)) == []
