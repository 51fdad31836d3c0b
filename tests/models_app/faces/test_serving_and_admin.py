"""Private serving: only through the permission-checked view; deletion removes the files."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction

from models_app.faces.services import delete_face_image, ingest_image
from models_app.models import FaceImage

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(face_jpeg) -> FaceImage:
    return ingest_image(face_jpeg).image


def test_staff_gets_file_with_private_headers(staff_client, image):
    for variant in ("image", "chip"):
        r = staff_client.get(f"/faces/{image.id}/{variant}")
        assert r.status_code == 200
        assert r["Content-Type"] == "image/png"
        assert "no-store" in r["Cache-Control"]
        body = b"".join(r.streaming_content)
        assert body.startswith(b"\x89PNG")


def test_anonymous_and_non_staff_get_404(client, django_user_model, image):
    assert client.get(f"/faces/{image.id}/image").status_code == 404
    user = django_user_model.objects.create_user("someone", password="pw")
    client.force_login(user)
    assert client.get(f"/faces/{image.id}/chip").status_code == 404
    assert client.get(f"/faces/{image.id}/other").status_code == 404


def test_storage_has_no_public_url(image):
    with pytest.raises(NotImplementedError):
        image.file.url  # noqa: B018


def test_admin_pages_show_thumbnails_through_the_view(staff_client, image, django_user_model):
    user = staff_client.user
    user.is_superuser = True
    user.save()
    r = staff_client.get("/admin/models_app/faceimage/")
    assert r.status_code == 200
    assert f"/faces/{image.id}/chip".encode() in r.content
    r = staff_client.get(f"/admin/models_app/faceimage/{image.id}/change/")
    assert r.status_code == 200 and f"/faces/{image.id}/image".encode() in r.content


@pytest.mark.django_db(transaction=True)
def test_delete_removes_row_and_files(face_jpeg, staff_client):
    img = ingest_image(face_jpeg).image
    paths = [Path(img.file.path), Path(img.chip.path)]
    assert all(p.exists() for p in paths)
    r = staff_client.delete(f"/api/images/{img.id}/")
    assert r.status_code == 204
    assert not FaceImage.objects.filter(pk=img.pk).exists()
    assert not any(p.exists() for p in paths)


@pytest.mark.django_db(transaction=True)
def test_rolled_back_delete_keeps_files(face_jpeg):
    img = ingest_image(face_jpeg).image
    path, pk = Path(img.file.path), img.pk
    with pytest.raises(RuntimeError), transaction.atomic():
        delete_face_image(img)
        raise RuntimeError("abort")
    assert path.exists() and FaceImage.objects.filter(pk=pk).exists()


@pytest.mark.django_db(transaction=True)
def test_delete_takes_outputs_pairs_and_judgments_along(face_jpeg, lfw_dir, staff_client):
    from django.utils import timezone

    from ratings.models import Assignment, Judgment, Pair, PairLabel
    from tests.ratings.factories import make_campaign

    src = ingest_image(face_jpeg).image
    other = ingest_image((lfw_dir / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg").read_bytes()).image
    out = ingest_image(
        (lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0003.jpg").read_bytes(), kind="output", parent=src
    ).image
    camp = make_campaign()
    pair = Pair.objects.create(campaign=camp, image_a=src, image_b=out, kind="deid")
    keep = Pair.objects.create(campaign=camp, image_a=other, image_b=other, kind="attention",
                               expected_same=True)
    rater = camp.raters.create(external_id="p1", source="prolific")
    now = timezone.now()
    a = Assignment.objects.create(campaign=camp, rater=rater, pair=pair, issued=now, expires=now)
    Judgment.objects.create(assignment=a, campaign=camp, rater=rater, pair=pair, same=True,
                            confidence=3, response_ms=900, left_image=out)
    PairLabel.objects.create(pair=pair, score_a=1.0, same=True, n_judgments=1, method="majority_vote")
    files = [Path(f.path) for f in (src.file, src.chip, out.file, out.chip)]
    r = staff_client.delete(f"/api/images/{src.pk}/")
    assert r.status_code == 204
    assert not FaceImage.objects.filter(pk__in=[src.pk, out.pk]).exists()
    assert not Pair.objects.filter(pk=pair.pk).exists() and not Judgment.objects.exists()
    assert not PairLabel.objects.exists() and Pair.objects.filter(pk=keep.pk).exists()
    assert not any(p.exists() for p in files)
