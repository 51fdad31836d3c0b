"""The donor pool (issue 13, `disguise`): donors come in through the import command and the
upload API with ``kind`` donor, carry no subject (no identity), are never job sources or
rating sources, are chosen by similarity, and delete like any image."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from django.core.management import call_command

from models_app.faces.selectors import choose_donors, context_of, donor_images
from models_app.models import FaceImage, Subject

pytestmark = pytest.mark.django_db


def _post(client, data: bytes, **extra):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post("/api/images/", {"file": SimpleUploadedFile("x.jpg", data), **extra},
                       format="multipart")


def test_import_faces_kind_donor_stores_donors_without_subjects(tmp_path, lfw_dir):
    for name in ("Abdullah_Gul", "Aaron_Peirsol"):
        (tmp_path / name).mkdir()
        for f in sorted((lfw_dir / name).glob("*.jpg"))[:1]:
            shutil.copy(f, tmp_path / name / f.name)
    flat = sorted((lfw_dir / "Aaron_Sorkin").glob("*.jpg"))[:1]
    for f in flat:  # donors may also sit in a flat folder
        shutil.copy(f, tmp_path / f.name)
    out = io.StringIO()
    call_command("import_faces", str(tmp_path), "--kind", "donor", "--no-progress", stdout=out)
    assert "Imported 3" in out.getvalue(), out.getvalue()
    donors = list(donor_images())
    assert len(donors) == 3
    assert all(d.kind == "donor" and d.subject_id is None for d in donors)
    assert not Subject.objects.exists()  # no identity is stored for a donor


def test_upload_donor_api_refuses_identity_and_deletes(staff_client, face_jpeg, lfw_dir):
    r = _post(staff_client, face_jpeg, kind="donor", subject="someone")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "subject"
    assert not FaceImage.objects.exists()
    r = _post(staff_client, face_jpeg, kind="nonsense")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "kind"
    r = _post(staff_client, face_jpeg, kind="donor")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["kind"] == "donor" and body["subject"] is None
    listed = staff_client.get("/api/images/?kind=donor").json()
    ids = [row["id"] for row in listed.get("results", listed)]
    assert ids == [body["id"]]
    # A donor is never the source of a job.
    from tests.models_app.fixtures import promote_untrained_proxy

    promote_untrained_proxy()
    r = staff_client.post("/api/deid-jobs/", {"image": body["id"]},
                          content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "not_a_source"
    # Deletable: the row and its files go.
    r = staff_client.delete(f"/api/images/{body['id']}/")
    assert r.status_code in (200, 204), r.content
    assert not FaceImage.objects.filter(pk=body["id"]).exists()
    assert not donor_images().exists()


def test_choose_donors_ranks_the_pool(face_jpeg, lfw_dir):
    from models_app.faces.services import ingest_image

    for name in ("Abdullah_Gul", "Aaron_Sorkin", "Abel_Pacheco"):
        f = sorted((lfw_dir / name).glob("*.jpg"))[0]
        assert ingest_image(f.read_bytes(), kind=FaceImage.Kind.DONOR).outcome == "imported"
    src = ingest_image(face_jpeg).image
    ctx = context_of(src)
    ranked = choose_donors(ctx, src.landmarks, k=3)
    assert len(ranked) == 3 and len({d.pk for d, _ in ranked}) == 3
    assert all(d.kind == "donor" and c.shape == (300, 300, 3) for d, c in ranked)
    # The source's own pixels, put in the pool as a donor (as a PNG: other bytes), rank first.
    from PIL import Image

    from models_app.vision.imagefile import encode_png

    with Image.open(io.BytesIO(face_jpeg)) as im:
        png = encode_png(np.asarray(im.convert("RGB")))
    twin = ingest_image(png, kind=FaceImage.Kind.DONOR)
    assert twin.outcome == "imported"
    assert choose_donors(ctx, src.landmarks, k=1)[0][0].pk == twin.image.pk
