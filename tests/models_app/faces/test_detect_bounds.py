"""The face search is bounded (issue 12, defects 1 and 4): a face-less image of any size
is searched on a copy of bounded size and refused with a 422; tiny images are a 400; LFW
photos are still searched at full resolution, so their landmarks do not change."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from models_app.models import FaceImage, Subject
from models_app.vision import faces


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()


class _Recorder:
    """Wraps dlib's detectors: records the (height, width, upsample) of every pass and
    refuses, before dlib runs, one whose work exceeds the budget (unbounded code would
    otherwise spend minutes and gigabytes on it)."""

    def __init__(self, monkeypatch, hog_budget: int, cnn_budget: int) -> None:
        self.hog: list[tuple[int, int, int]] = []
        self.cnn: list[tuple[int, int, int]] = []
        real_get, real_cnn = faces._Models.get, faces._Models.cnn
        rec = self

        class Hog:
            def __init__(self, det) -> None:
                self.det = det

            def run(self, arr, up, thresh):
                rec.hog.append((arr.shape[0], arr.shape[1], up))
                assert arr.shape[0] * arr.shape[1] * 4**up <= hog_budget, arr.shape
                return self.det.run(arr, up, thresh)

        def cnn_call(det):
            def call(arr, up):
                rec.cnn.append((arr.shape[0], arr.shape[1], up))
                assert arr.shape[0] * arr.shape[1] * 4**up <= cnn_budget, arr.shape
                return det(arr, up)

            return call

        monkeypatch.setattr(faces._Models, "get", classmethod(
            lambda cls: (Hog(real_get()[0]), real_get()[1])
        ))
        monkeypatch.setattr(faces._Models, "cnn", classmethod(lambda cls: cnn_call(real_cnn())))


def test_detection_scale_bounds_the_work():
    assert faces.detection_scale(250, 250, 0, 8_000_000) == 1.0
    assert faces.detection_scale(250, 250, 1, 250_000) == 1.0
    for w, h, up, budget in [(6000, 6000, 0, 8_000_000), (6000, 6000, 1, 250_000),
                             (640, 480, 1, 250_000), (40000, 1000, 0, 250_000)]:
        s = faces.detection_scale(w, h, up, budget)
        assert 0 < s < 1
        assert (w * s) * (h * s) * 4**up <= budget * 1.0001


@pytest.mark.django_db
def test_big_blank_image_is_searched_small_and_refused(
    staff_client, settings, monkeypatch, django_user_model
):
    settings.DEID_DETECT_CNN_MAX_PIXELS = 100_000  # the bound under test, and a quicker test
    rec = _Recorder(monkeypatch, settings.DEID_DETECT_MAX_PIXELS, 100_000)
    user = django_user_model.objects.create_superuser("bounds-op", password="pw")
    staff_client.force_login(user)
    r = staff_client.post(
        "/api/images/",
        {"file": SimpleUploadedFile("blank.png", _png(6000, 6000)), "subject": "new-subject"},
        format="multipart",
    )
    assert r.status_code == 422, r.content
    assert r.json()["errors"][0]["code"] == "no_face"
    # HOG once on an 8 Mpx copy (upsample 1 on a half-size copy would see nothing finer),
    # the CNN once on a 100 kpx copy.
    assert len(rec.hog) == 1 and rec.hog[0][0] * rec.hog[0][1] <= settings.DEID_DETECT_MAX_PIXELS
    assert len(rec.cnn) == 1 and rec.cnn[0][0] * rec.cnn[0][1] <= 100_000
    assert FaceImage.objects.count() == 0 and Subject.objects.count() == 0
    assert not any(p.is_file() for p in Path(settings.MEDIA_ROOT).rglob("*"))


def test_lfw_photos_are_searched_at_full_resolution(monkeypatch, lfw_dir):
    """250x250: HOG at upsample 0 and 1 and the CNN fallback all see the photo itself, so
    boxes and landmarks are those of the unbounded search."""
    rec = _Recorder(monkeypatch, 10**12, 10**12)
    rgb = np.asarray(Image.open(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"))
    face = faces.detect_and_align(rgb)
    assert face is not None and rec.hog == [(250, 250, 0)]
    rec.hog.clear()
    grey = np.full((250, 250, 3), 128, np.uint8)
    assert faces.detect_and_align(grey, cnn_max_pixels=faces.DEFAULT_MAX_CNN_PIXELS) is None
    assert rec.hog == [(250, 250, 0), (250, 250, 1)]
    assert rec.cnn == [(250, 250, 0), (250, 250, 1)]


def test_boxes_found_on_a_copy_map_back_to_full_resolution(lfw_dir):
    rgb = Image.open(lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").convert("RGB")
    big = np.asarray(rgb.resize((1000, 1000), Image.Resampling.BICUBIC))
    full = faces.detect_and_align(big, max_pixels=10**12)
    small = faces.detect_and_align(big, max_pixels=250_000)  # searched at 500x500
    assert full is not None and small is not None
    # HOG boxes are quantised by its window scale: within 6% of the side.
    assert np.abs(np.subtract(full.box, small.box)).max() <= 60
    # Landmarks come from the full-resolution pixels in the mapped box.
    assert np.abs(np.subtract(full.landmarks, small.landmarks)).max() <= 4


@pytest.mark.django_db
def test_time_budget_refuses_with_its_own_code(staff_client, settings, django_user_model):
    settings.DEID_DETECT_TIME_BUDGET_S = 0.0  # only the first pass may run
    user = django_user_model.objects.create_superuser("budget-op", password="pw")
    staff_client.force_login(user)
    r = staff_client.post(
        "/api/images/", {"file": SimpleUploadedFile("blank.png", _png(640, 480))},
        format="multipart",
    )
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "face_search_too_costly"


@pytest.mark.django_db
@pytest.mark.parametrize("side", [1, 8])
def test_tiny_images_are_a_clear_400(staff_client, django_user_model, side):
    user = django_user_model.objects.create_superuser("tiny-op", password="pw")
    staff_client.force_login(user)
    r = staff_client.post(
        "/api/images/",
        {"file": SimpleUploadedFile("tiny.png", _png(side, side)), "subject": "tiny-subject"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert r.json()["errors"][0] == {
        "field": "file", "code": "too_small", "detail": r.json()["errors"][0]["detail"]
    }
    assert FaceImage.objects.count() == 0 and Subject.objects.count() == 0
