"""The upload corpus through both upload routes (POST /api/images/ and the job upload of
POST /api/deid-jobs/): each class gets its deliberate status and code, and afterwards no
row and no file is half-stored: a rejected upload leaves no FaceImage, no Subject (its
label is new) and no file; an accepted one leaves exactly one image, its subject and its
two files."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from models_app.models import FaceImage, Subject
from tests.helpers import require_lfw

from .corpus import CLASSES, Faces, UploadClass

pytestmark = pytest.mark.django_db

# A class that runs the whole bounded CNN search on a big image takes seconds.
SLOW = {"blank_6000x6000", "bomb_49mpx", "large_photo_12mpx"}


def _params(route: str) -> list:
    return [
        pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in SLOW else [])
        for c in CLASSES
        if route == "images" or c.code is not None or c.name == "jpeg"
    ]


@pytest.fixture(scope="module")
def faces() -> Faces:
    lfw = require_lfw()
    return Faces(
        jpeg=(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes(),
        other_jpeg=(lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg").read_bytes(),
    )


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("corpus-op", password="pw")
    client.force_login(user)
    return client


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _assert_outcome(
    r, case: UploadClass, label: str, media: Path, before: frozenset[Path] = frozenset(),
    code: str | None = None,
) -> FaceImage | None:
    assert r.status_code == case.status, (case.name, r.status_code, r.content[:300])
    new_files = [p for p in _files(media) if p not in before]
    if case.code is not None:
        body = r.json()
        assert body["errors"][0]["code"] == (code or case.code)
        assert body["errors"][0]["field"] == "file" and body["errors"][0]["detail"]
        assert FaceImage.objects.count() == 0
        assert not Subject.objects.filter(label=label).exists()
        assert Subject.objects.count() == 0
        assert new_files == []
        return None
    image = FaceImage.objects.get()
    assert image.subject is not None and image.subject.label == label
    assert Subject.objects.count() == 1
    assert sorted(p.name for p in new_files) == [f"{image.id.hex}.png"] * 2
    assert image.status == "ok" and len(image.landmarks) == 5
    return image


@pytest.mark.parametrize("case", _params("images"))
def test_images_route(operator, faces, settings, case: UploadClass):
    for key, value in case.settings.items():
        setattr(settings, key, value)
    label = f"corpus-{uuid.uuid4().hex[:8]}"
    data = case.make(faces)
    r = operator.post(
        "/api/images/", {"file": SimpleUploadedFile(case.filename, data), "subject": label},
        format="multipart",
    )
    image = _assert_outcome(r, case, label, Path(settings.MEDIA_ROOT))
    if image is not None:
        stored = Path(image.file.path).read_bytes()
        assert Image.open(io.BytesIO(stored)).mode == "RGB"
        if case.check is not None:
            case.check(image, stored)


@pytest.fixture
def proxy(db, django_capture_on_commit_callbacks):
    from tests.models_app.fixtures import promote_untrained_proxy

    with django_capture_on_commit_callbacks():
        return promote_untrained_proxy()


@pytest.mark.parametrize("case", _params("jobs"))
def test_job_upload_route_answers_alike(operator, faces, settings, case: UploadClass, proxy):
    """With a promoted proxy (without one, a job upload is refused before the file is read:
    tests/models_app/jobs), the file's own refusal, as on the images route."""
    from models_app.jobs.models import DeidJob

    for key, value in case.settings.items():
        setattr(settings, key, value)
    label = f"corpus-{uuid.uuid4().hex[:8]}"
    media = Path(settings.MEDIA_ROOT)
    before = frozenset(_files(media))  # the promoted proxy's weights
    r = operator.post(
        "/api/deid-jobs/",
        {"file": SimpleUploadedFile(case.filename, case.make(faces)), "subject": label},
        format="multipart",
    )
    # DRF's FileField (jobs serializer) refuses an empty file before ingest sees it: the
    # same 400 on the same field, under DRF's own code.
    code = "empty" if case.name == "empty" else None
    image = _assert_outcome(r, case, label, media, before, code)
    assert DeidJob.objects.count() == (0 if image is None else 1)


def test_corpus_has_every_class_of_the_probe():
    names = {c.name for c in CLASSES}
    assert len(names) == len(CLASSES) >= 24
    assert {c.code for c in CLASSES} >= {
        "empty_file", "not_an_image", "corrupt_image", "animated_image", "unsupported_bit_depth",
        "too_many_pixels", "too_small", "file_too_large", "no_face", "several_faces", None,
    }
