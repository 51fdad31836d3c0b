"""De-identification jobs through the API, a real worker, the database and the file store:
parameters, the trajectory, the output, its pair, cancel, resume after a killed worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

from models_app.faces.services import get_or_create_subject, ingest_image
from models_app.jobs import rescoring, runner
from models_app.models import DeidIteration, DeidJob, FaceImage
from tests.helpers import wait_for
from tests.models_app.fixtures import promote_untrained_proxy

FAST = {"max_iterations": 3, "convergence_window": 2, "eot": {"confirm_samples": 1}}


@pytest.fixture
def source(face_jpeg) -> FaceImage:
    return ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image


@pytest.fixture
def proxy(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        return promote_untrained_proxy()


def _post(client, body):
    return client.post("/api/deid-jobs/", body, content_type="application/json")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params,field",
    [
        ({"loss": {"lambda0": -1}}, "params.loss.lambda0"),
        ({"tau_a": 1.5}, "params.tau_a"),
        ({"tau_b": -0.1}, "params.tau_b"),
        ({"ensemble": {"cfrus": ["no_such_cfru"]}}, "params.ensemble"),
        ({"parameterisation": "gan"}, "params.parameterisation"),
        ({"max_iterations": 0}, "params.max_iterations"),
        ({"bogus": 1}, "params.bogus"),
    ],
)
def test_invalid_parameters_name_the_field(staff_client, source, proxy, params, field):
    r = _post(staff_client, {"image": str(source.pk), "params": params})
    assert r.status_code == 400, r.content
    assert r.json()["errors"][0]["field"] == field
    assert not DeidJob.objects.exists()


@pytest.mark.django_db
def test_rejected_image_unknown_image_and_missing_proxy(staff_client, source, face_jpeg):
    r = _post(staff_client, {"image": str(source.pk)})
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "no_promoted_proxy"
    promote_untrained_proxy()
    FaceImage.objects.filter(pk=source.pk).update(status="rejected")
    r = _post(staff_client, {"image": str(source.pk)})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "image"
    r = _post(staff_client, {"image": "00000000-0000-0000-0000-000000000000"})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "image"
    r = _post(staff_client, {})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "image"
    assert not DeidJob.objects.exists()


@pytest.mark.django_db
def test_non_staff_cannot_start_jobs(client, django_user_model, source, proxy):
    client.force_login(django_user_model.objects.create_user("rater", password="pw"))
    assert _post(client, {"image": str(source.pk)}).status_code == 403


@pytest.mark.django_db
def test_cancel_and_batch(staff_client, source, proxy, lfw_dir, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        r = _post(staff_client, {"image": str(source.pk), "params": FAST})
    assert r.status_code == 201 and len(sent) == 1  # the task goes out on commit
    job_id = r.json()["id"]
    assert r.json()["params"]["tau_a"] == 0.3 and r.json()["params"]["max_iterations"] == 3
    r = staff_client.post(f"/api/deid-jobs/{job_id}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = staff_client.post(f"/api/deid-jobs/{job_id}/cancel/")
    assert r.status_code == 409
    # A batch over a subject: one job per source image of it.
    subject = get_or_create_subject("subject-2")
    for f in sorted((lfw_dir / "Abdullah_Gul").glob("*.jpg"))[:2]:
        ingest_image(f.read_bytes(), subject=subject)
    with django_capture_on_commit_callbacks() as sent:
        r = staff_client.post(
            "/api/deid-jobs/batch/", {"subjects": [str(subject.pk)], "params": FAST},
            content_type="application/json",
        )
    assert r.status_code == 201, r.content
    assert len(r.json()) == 2 and len(sent) == 2
    assert len({j["batch"] for j in r.json()}) == 1


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_job_runs_on_the_worker_and_feeds_a_campaign(staff_client, settings, celery_worker_process, face_jpeg):
    from ratings.models import Pair
    from tests.ratings.factories import make_campaign

    settings.MEDIA_ROOT = celery_worker_process.media_root
    promote_untrained_proxy()
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    campaign = make_campaign()
    r = _post(staff_client, {"image": str(src.pk), "params": FAST, "campaign": campaign.pk})
    assert r.status_code == 201, r.content
    job_id = r.json()["id"]

    def done() -> DeidJob | None:
        job = DeidJob.objects.get(pk=job_id)
        return job if job.status not in ("queued", "running") else None

    job = wait_for(done, timeout=240, interval=0.5, what=f"deid job {job_id}")
    assert job.status in ("succeeded", "finished"), job.error
    assert job.stop_reason in ("success", "converged", "max_iterations")
    # Success is claimed only when the loop stopped on success and the saved file confirms it.
    tau_b = job.params["tau_b"]
    confirmed = (job.stop_reason == "success" and job.final_detail["detected_in_saved_file"]
                 and job.final_score_b >= tau_b)
    assert (job.status == "succeeded") == confirmed
    detail = staff_client.get(f"/api/deid-jobs/{job_id}/").json()
    traj = detail["trajectory"]
    assert [t["index"] for t in traj] == list(range(job.iterations_done + 1))
    assert all(0 <= t["score_a"] <= 1 and 0 <= t["score_b"] <= 1 for t in traj)
    out = job.output
    assert out.kind == "output" and out.parent_id == src.pk and out.subject_id == src.subject_id
    # Three small steps of an untrained proxy leave a face that is found again on the file.
    assert job.final_detail["detected_in_saved_file"] is True
    assert 0.0 < job.final_detail["saved_file_score_b"] <= 1.0
    assert job.final_score_b == job.final_detail["saved_file_score_b"]
    # One pair per image: the ladder's rungs (default thresholds) and the output.
    pairs = Pair.objects.filter(campaign=campaign)
    assert {str(p.image_b_id) for p in pairs} == {r["image"] for r in job.ladder} | {str(out.pk)}
    assert len(pairs) == len({p.image_b_id for p in pairs})
    assert all((p.image_a_id, str(p.deid_job_id)) == (src.pk, job_id) for p in pairs)
    assert not job.checkpoint  # removed once the output exists


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_resumes_without_duplicates(source, proxy, monkeypatch):
    # The untrained proxy's score-A stays near 0.55: both rungs are crossed by the first
    # natural iterate (1 or 2: Adam's first step can leave the colour range, and the
    # naturalness term brings it back), before the kill, and must not be stored again by the
    # resumed attempt.
    job = DeidJob.objects.create(source=source, params={**FAST, "max_iterations": 4,
                                 "convergence_window": 50, "ladder": [0.9, 0.6]},
                                 proxy_version=proxy)
    real = runner._record

    class Killed(BaseException):
        pass

    def dying(job_, rec, cp, *rungs):
        real(job_, rec, cp, *rungs)
        if rec.iteration == 2:
            raise Killed  # as if the process died right after committing iteration 2

    monkeypatch.setattr(runner, "_record", dying)
    with pytest.raises(Killed):
        runner.execute_deid_job(str(job.pk))
    job.refresh_from_db()
    assert job.status == "running" and job.iterations_done == 2 and job.checkpoint
    assert list(job.iterations.values_list("index", flat=True)) == [0, 1, 2]
    ladder = job.ladder
    outside = {it.index: it.loss["natural_outside"] for it in job.iterations.all()}
    first = min(k for k in (1, 2) if outside[k] == 0)
    assert [(r["threshold"], r["iteration"]) for r in ladder] == [(0.9, first), (0.6, first)]

    monkeypatch.setattr(runner, "_record", real)
    # Redelivered while the dead attempt's heartbeat is still fresh: it could be alive
    # elsewhere, so the delivery is dropped (no second concurrent run).
    assert runner.execute_deid_job(str(job.pk))["skipped"] is True
    job.refresh_from_db()
    assert job.attempts == 1 and job.heartbeat is not None
    # Once the heartbeat is stale, the next delivery takes over and resumes.
    DeidJob.objects.filter(pk=job.pk).update(
        heartbeat=job.heartbeat - timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S + 1)
    )
    out = runner.execute_deid_job(str(job.pk))  # the redelivered task
    job.refresh_from_db()
    assert out["status"] in ("succeeded", "finished") and job.attempts == 2
    idx = list(DeidIteration.objects.filter(job=job).values_list("index", flat=True))
    assert idx == list(range(job.iterations_done + 1))
    assert job.ladder == ladder  # not stored twice
    images = {r["image"] for r in ladder} | {str(job.output_id)}
    assert FaceImage.objects.filter(kind="output").count() == len(images)
    # A third delivery finds the job done and does nothing.
    assert runner.execute_deid_job(str(job.pk))["skipped"] is True
    assert FaceImage.objects.filter(kind="output").count() == len(images)


@pytest.mark.django_db
def test_promotion_rescores_finished_outputs(source, proxy):
    job = DeidJob.objects.create(source=source, params=FAST, proxy_version=proxy)
    runner.execute_deid_job(str(job.pk))
    job.refresh_from_db()
    assert job.current_proxy_id == proxy.pk
    v2 = promote_untrained_proxy()
    out = rescoring.rescore_outputs(str(v2.pk))
    job.refresh_from_db()
    assert out["rescored"] == 1 and job.current_proxy_id == v2.pk
    assert 0.0 <= job.current_score_a <= 1.0


@pytest.mark.django_db(transaction=True)
def test_two_jobs_with_the_same_output_both_finish(source, proxy):
    """Same source, parameters and seed: byte-identical outputs. The second used to hit the
    output's unique constraint and stay ``running`` (re-queued by the sweeper forever)."""
    a, b = (DeidJob.objects.create(source=source, params={**FAST, "ladder": []},
                                   proxy_version=proxy)
            for _ in range(2))
    runner.execute_deid_job(str(a.pk))
    out = runner.execute_deid_job(str(b.pk))
    a.refresh_from_db()
    b.refresh_from_db()
    assert out["status"] == b.status and b.status in ("succeeded", "finished"), b.error
    assert a.output_id is not None and b.output_id is None
    assert b.final_detail["same_output_as_job"] == str(a.pk)
    assert FaceImage.objects.filter(kind="output").count() == 1
    # What the result rests on, why it stopped, and whether the output's face colour is one
    # a photograph has.
    assert a.final_detail["success_basis"] == "prior_proxy"
    assert a.final_detail["stop_detail"] and isinstance(a.final_detail["naturalness"]["natural"], bool)
    assert set(a.final_detail["naturalness"]) >= {"a_mean", "b_mean", "l_spread", "outside"}
    assert isinstance(a.final_detail["natural_kept"], bool)


def test_success_basis_and_stop_detail_say_what_a_verdict_rests_on():
    from types import SimpleNamespace as V

    from models_app.jobs.models import VERDICTS

    assert runner.success_basis(None) == "prior_proxy"
    assert runner.success_basis(V(is_prior=True, metrics={})) == "prior_proxy"
    assert runner.success_basis(V(is_prior=False, metrics={"simulated_labels": 3})) == (
        "proxy_trained_on_simulated_judgments")
    assert runner.success_basis(V(is_prior=False, metrics={"simulated_labels": 0})) == (
        "proxy_trained_on_peoples_judgments")
    assert "says little about people" in VERDICTS["prior_proxy"]
    assert "no face found again" in runner.stop_detail("success", False, None, 0.6)
    assert "0.5 < τB 0.6" in runner.stop_detail("success", True, 0.5, 0.6)
    assert runner.stop_detail("success", True, 0.7, 0.6).endswith("confirmed on the saved photo")
    assert runner.stop_detail("max_iterations", True, 0.7, 0.6) == "the iteration budget ran out"
    assert "never reached its human-side margin" in runner.stop_detail(
        "converged", True, 0.7, 0.6, margin_kept=False)
    assert "natural face colour" in runner.stop_detail(
        "converged", True, 0.7, 0.6, natural_kept=False)


@pytest.mark.django_db
def test_a_job_that_keeps_killing_its_worker_fails_for_good(source, proxy, settings):
    job = DeidJob.objects.create(source=source, params=FAST, proxy_version=proxy,
                                 status="running", attempts=settings.DEID_JOB_MAX_ATTEMPTS)
    assert runner.execute_deid_job(str(job.pk))["skipped"] is True
    job.refresh_from_db()
    assert job.status == "failed" and "attempts" in job.error


@pytest.mark.django_db
def test_a_refused_job_upload_stores_nothing(staff_client, face_jpeg):
    """No promoted proxy: the upload is refused before its photo or subject is stored."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from models_app.models import Subject

    r = staff_client.post(
        "/api/deid-jobs/",
        {"file": SimpleUploadedFile("x.jpg", face_jpeg), "subject": "new-subject"},
        format="multipart",
    )
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "no_promoted_proxy"
    assert not FaceImage.objects.exists() and not Subject.objects.exists()


@pytest.mark.django_db
def test_a_job_stores_its_ladder_and_sends_every_rung_to_its_campaign(source, proxy):
    """Rungs where the proxy's score-A first fell below each threshold: stored as outputs of
    the source, listed on the job, and judged (one deid pair per image) with the output."""
    from ratings.models import Pair
    from tests.ratings.factories import make_campaign

    campaign = make_campaign()
    # The untrained proxy's score-A sits between 0.01 and 0.99 throughout: the high rungs are
    # crossed by some iterate, 0.01 never.
    ladder = [0.99, 0.9, 0.6, 0.01]
    job = DeidJob.objects.create(
        source=source, params={**FAST, "ladder": ladder}, proxy_version=proxy,
        campaign=campaign,
    )
    runner.execute_deid_job(str(job.pk))
    job.refresh_from_db()
    assert job.status in ("succeeded", "finished"), job.error
    # A rung is the first iterate below its threshold whose face colour is natural.
    traj = {it.index: it.score_a for it in job.iterations.all()
            if it.index > 0 and it.loss["natural_outside"] == 0}
    crossed = [t for t in ladder if any(a < t for a in traj.values())]
    assert crossed and 0.01 not in crossed, traj
    assert [r["threshold"] for r in job.ladder] == crossed
    for rung in job.ladder:
        first = min(k for k, a in traj.items() if a < rung["threshold"])
        assert rung["iteration"] == first
        assert rung["score_a"] == pytest.approx(traj[first])
        assert 0.0 <= rung["score_b"] <= 1.0
        img = FaceImage.objects.get(pk=rung["image"])
        assert img.kind == "output" and img.parent_id == source.pk
        assert img.subject_id == source.subject_id and img.file
    images = list(dict.fromkeys([r["image"] for r in job.ladder] + [str(job.output_id)]))
    pairs = Pair.objects.filter(campaign=campaign).order_by("id")
    assert [str(p.image_b_id) for p in pairs] == images
    assert all(p.kind == "deid" and p.image_a_id == source.pk and p.deid_job_id == job.pk
               for p in pairs)
    assert all(p.expected_same is None for p in pairs)


@pytest.mark.django_db
def test_ladder_parameter_is_validated_and_can_be_turned_off(staff_client, source, proxy):
    r = _post(staff_client, {"image": str(source.pk), "params": {"ladder": [0.5, 1.5]}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.ladder"
    r = _post(staff_client, {"image": str(source.pk), "params": {**FAST, "ladder": []}})
    assert r.status_code == 201 and r.json()["params"]["ladder"] == []
    assert r.json()["ladder"] == []
    r = _post(staff_client, {"image": str(source.pk), "params": FAST})
    assert r.json()["params"]["ladder"] == [0.8, 0.6, 0.4]
    job = DeidJob.objects.get(pk=r.json()["id"])
    runner.execute_deid_job(str(job.pk))
    job.refresh_from_db()
    off = DeidJob.objects.create(source=source, params={**FAST, "ladder": []}, proxy_version=proxy)
    runner.execute_deid_job(str(off.pk))
    off.refresh_from_db()
    assert off.ladder == [] and job.ladder  # 0.8 and 0.6 lie above the untrained proxy's 0.55
    # The ladder never changes the trajectory.
    assert list(off.iterations.values_list("score_a", "score_b")) == list(
        job.iterations.values_list("score_a", "score_b"))
