"""`disguise` jobs (issue 13): refused without a donor pool, run through the API and a real
worker with one, recording the donor, the margin term, the naturalness and seam figures."""

from __future__ import annotations

import pytest

from models_app.faces.services import get_or_create_subject, ingest_image
from models_app.models import DeidJob, FaceImage
from tests.helpers import wait_for
from tests.models_app.fixtures import promote_untrained_proxy

FAST = {"parameterisation": "disguise", "max_iterations": 3, "convergence_window": 2,
        "eot": {"confirm_samples": 1}, "ladder": []}
DONORS = ("Abdullah_Gul", "Aaron_Sorkin", "Abel_Pacheco")


def _post(client, body):
    return client.post("/api/deid-jobs/", body, content_type="application/json")


def _donors(lfw_dir) -> list[FaceImage]:
    out = []
    for name in DONORS:
        f = sorted((lfw_dir / name).glob("*.jpg"))[0]
        out.append(ingest_image(f.read_bytes(), kind=FaceImage.Kind.DONOR).image)
    return out


@pytest.mark.django_db
def test_disguise_needs_a_donor_pool_and_valid_ranges(staff_client, face_jpeg, lfw_dir):
    promote_untrained_proxy()
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    r = _post(staff_client, {"image": str(src.pk), "params": FAST})
    assert r.status_code == 409, r.content
    err = r.json()["errors"][0]
    assert err["code"] == "no_donors" and err["field"] == "params.parameterisation"
    r = _post(staff_client, {"image": str(src.pk),
                             "params": {**FAST, "disguise_ranges": {"band_gain": 5}}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.disguise_ranges"
    r = _post(staff_client, {"image": str(src.pk), "params": {"blend": "square"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.blend"
    assert not DeidJob.objects.exists()
    _donors(lfw_dir)
    r = _post(staff_client, {"image": str(src.pk), "params": FAST})
    assert r.status_code == 201, r.content
    assert r.json()["params"]["parameterisation"] == "disguise"
    assert r.json()["params"]["blend"] == "head"


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_disguise_job_runs_on_the_worker(staff_client, settings, celery_worker_process,
                                         face_jpeg, lfw_dir):
    settings.MEDIA_ROOT = celery_worker_process.media_root
    promote_untrained_proxy()
    donors = {str(d.pk) for d in _donors(lfw_dir)}
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    # Of the 3 donors, the one whose disguise keeps the source's identity best.
    params = {**FAST, "disguise_ranges": {"donor_candidates": 3}}
    r = _post(staff_client, {"image": str(src.pk), "params": params})
    assert r.status_code == 201, r.content
    job_id = r.json()["id"]

    def done() -> DeidJob | None:
        job = DeidJob.objects.get(pk=job_id)
        return job if job.status not in ("queued", "running") else None

    job = wait_for(done, timeout=300, interval=0.5, what=f"disguise job {job_id}")
    assert job.status in ("succeeded", "finished"), job.error
    detail = job.final_detail
    assert detail["donor"] in donors  # an opaque donor id, no identity
    from models_app.deid import DeidSource
    from models_app.deid.disguise import DisguiseRanges, donor_identity_distances
    from models_app.faces.selectors import choose_donors, load_rgb_array
    from models_app.vision import faces

    photo = load_rgb_array(src)
    source = DeidSource(faces.context_crop(photo, src.box, src.landmarks), photo,
                        tuple(src.box), [tuple(p) for p in src.landmarks])
    cands = choose_donors(source.context, source.landmarks, k=3)
    d = donor_identity_distances(source.context, [c for _, c in cands], DisguiseRanges(),
                                 source.change_mask("head"))
    assert len(cands) == 3 and detail["donor"] == str(cands[int(d.argmin())][0].pk)
    assert set(detail["naturalness"]) >= {"a_mean", "b_mean", "l_spread", "natural"}
    # Three iterations cannot reach the donor-share margin: the job says so.
    assert detail["margin_kept"] is False and "human-side margin" in detail["stop_detail"]
    seam = detail["seam"]
    assert seam["blend"] == "head" and seam["passes"] is True
    # The margin term is in every iteration's loss terms; record 0 is the unchanged source.
    traj = staff_client.get(f"/api/deid-jobs/{job_id}/").json()["trajectory"]
    assert traj[0]["loss"]["margin"] == pytest.approx(0.95**2, abs=1e-4)
    assert traj[0]["loss"]["change_disguise_share"] == 0.0
    assert traj[-1]["loss"]["change_disguise_share"] > 0.0
    out = job.output
    assert out.kind == "output" and out.parent_id == src.pk and out.subject_id == src.subject_id
    # The donor stays a donor: never a subject, never a job source.
    assert not FaceImage.objects.filter(pk__in=donors).exclude(kind="donor").exists()
    assert not FaceImage.objects.filter(pk__in=donors, subject__isnull=False).exists()
