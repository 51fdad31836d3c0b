"""The generator on the platform: training as a TrainingRun on a real worker (registered,
gated, promoted), resume after a killed worker, jobs with ``method=generator`` through the
API and the worker, batched passes, the hybrid, and the registry keeping kinds apart."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import torch
from django.conf import settings
from django.core.files.storage import default_storage

from deidplatform.errors import AppError
from models_app.faces.services import get_or_create_subject, ingest_image
from models_app.generator import GeneratorConfig, ParamGenerator, generator_to_bytes
from models_app.jobs import runner as job_runner
from models_app.models import DeidJob, FaceImage, ModelKind, ModelVersion, TrainingRun
from models_app.training import generator_runner, registry, services
from models_app.training.selectors import load_version_model, promoted_version
from tests.helpers import wait_for
from tests.models_app.fixtures import ingest_subjects, promote_untrained_proxy

TINY = {"input_size": 32, "width": 8}
# A tiny run: two epochs of a small network on a few faces, cheap EOT.
FAST_RUN = {
    "generator": TINY,
    "deid": {"eot": {"jpeg_prob": 0.0, "confirm_samples": 1}},
    "train": {"batch_size": 4, "lr": 0.01, "stop": {"max_epochs": 2}},
    "max_faces": 8, "max_held_out": 4,
}
FAST_JOB = {"eot": {"confirm_samples": 1}, "max_iterations": 2, "convergence_window": 2,
            "ladder": []}


def make_generator(seed: int = 0) -> ParamGenerator:
    """A generator with a fixed (untrained) change: its head bias is random, so every face
    gets the same visible style change."""
    torch.manual_seed(seed)
    model = ParamGenerator(GeneratorConfig(**TINY))
    torch.nn.init.normal_(model.head.bias, std=0.3)
    return model


def register_generator(seed: int = 0, promote: bool = True) -> ModelVersion:
    model = make_generator(seed)
    v = registry.register_version(
        kind=ModelKind.GENERATOR, weights=generator_to_bytes(model),
        config={"generator": model.config.to_dict()}, metrics={},
    )
    return registry.promote(v) if promote else v


def _wait_run(run_id, timeout=300) -> TrainingRun:
    def finished() -> TrainingRun | None:
        run = TrainingRun.objects.get(pk=run_id)
        return run if run.status in ("succeeded", "failed") else None

    return wait_for(finished, timeout=timeout, interval=0.5, what=f"generator run {run_id}")


def _post_job(client, body):
    return client.post("/api/deid-jobs/", body, content_type="application/json")


@pytest.fixture
def source(face_jpeg) -> FaceImage:
    return ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image


# --- training -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_tiny_generator_trains_on_the_worker_and_is_registered(
    settings, celery_worker_process, lfw_dir, staff_client
):
    settings.MEDIA_ROOT = celery_worker_process.media_root
    groups = ingest_subjects(lfw_dir, n_subjects=8, per_subject=2)
    proxy = promote_untrained_proxy()
    r = staff_client.post("/api/training-runs/", {"kind": "generator", "config": FAST_RUN},
                          content_type="application/json")
    assert r.status_code == 202, r.content
    assert r.json()["kind"] == "generator"
    # One generator run at a time; a proxy run is not blocked by it.
    again = staff_client.post("/api/training-runs/", {"kind": "generator"},
                              content_type="application/json")
    assert again.status_code == 409
    run = _wait_run(r.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.kind == "generator"
    assert run.stop_reason in ("max_epochs", "converged", "score_a_threshold",
                               "score_b_threshold", "max_images")
    # Progress: epoch 0 (the identity) and each trained epoch, with held-out scores.
    assert [h["epoch"] for h in run.history] == list(range(len(run.history)))
    assert len(run.history) >= 2
    first = run.history[0]["held_out"]
    assert first["n"] == len(run.data_snapshot["held_out_faces"]) > 0
    assert 0 <= first["score_a"] <= 1 and first["score_b"] > 0.5  # the identity keeps B
    assert run.history[1]["train_images"] == len(run.data_snapshot["train_faces"]) == 8
    # Training and held-out faces come from disjoint subjects.
    subj = {str(i.pk): i.subject_id for g in groups for i in g}
    train_s = {subj[k] for k in run.data_snapshot["train_faces"]}
    held_s = {subj[k] for k in run.data_snapshot["held_out_faces"]}
    assert train_s and held_s and not train_s & held_s
    assert "checkpoint" not in run.data_snapshot  # removed once the run finished
    v = ModelVersion.objects.get(training_run=run)
    assert v.kind == "generator" and v.number == 1
    assert v.status == "promoted" and v.gate["passed"] is True  # the first one has no rival
    assert v.metrics["stop_reason"] == run.stop_reason
    assert 0.0 <= v.metrics["held_out_success_rate"] <= 1.0
    # The human proxy is untouched: still the promoted proxy, and the only one.
    assert promoted_version(ModelKind.HUMAN_PROXY).pk == proxy.pk
    assert promoted_version(ModelKind.GENERATOR).pk == v.pk
    listed = staff_client.get("/api/model-versions/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert {(x["kind"], x["number"], x["status"]) for x in rows} == {
        ("human_proxy", 1, "promoted"), ("generator", 1, "promoted")}


@pytest.mark.django_db
def test_a_killed_generator_run_resumes_from_its_last_checkpoint(lfw_dir, monkeypatch):
    ingest_subjects(lfw_dir, n_subjects=6, per_subject=2)
    promote_untrained_proxy()
    run = TrainingRun.objects.create(
        kind=ModelKind.GENERATOR,
        config={**FAST_RUN, "max_faces": 4, "max_held_out": 2,
                "deid": {**FAST_RUN["deid"], "tau_a": 0.0},  # never reached: all epochs run
                "train": {**FAST_RUN["train"], "stop": {"max_epochs": 3,
                                                        "convergence_window": 5}}},
    )
    real = generator_runner.train_generator

    class Killed(BaseException):
        pass

    def dying(*args, on_epoch, **kw):
        def wrapped(record, checkpoint):
            ok = on_epoch(record, checkpoint)
            if record["epoch"] == 1:
                raise Killed  # the process died right after storing epoch 1
            return ok

        return real(*args, on_epoch=wrapped, **kw)

    monkeypatch.setattr(generator_runner, "train_generator", dying)
    with pytest.raises(Killed):
        generator_runner.execute_generator_run(str(run.pk))
    run.refresh_from_db()
    assert run.status == "running" and [h["epoch"] for h in run.history] == [0, 1]
    ckpt = run.data_snapshot["checkpoint"]
    assert default_storage.exists(ckpt)
    monkeypatch.setattr(generator_runner, "train_generator", real)
    # Redelivered while the dead attempt's heartbeat is fresh: dropped.
    assert generator_runner.execute_generator_run(str(run.pk))["skipped"] is True
    TrainingRun.objects.filter(pk=run.pk).update(
        heartbeat=run.heartbeat - timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S + 1))
    # The sweeper re-sends runs under the proxy's task name: it still runs as a generator.
    from models_app.training.runner import execute_training_run

    out = execute_training_run(str(run.pk))
    run.refresh_from_db()
    assert out["status"] == "succeeded", run.error
    assert [h["epoch"] for h in run.history] == [0, 1, 2, 3]  # epoch 1 not trained twice
    v = ModelVersion.objects.get(training_run=run)
    assert v.kind == "generator" and v.metrics["resumed_from"] == 1
    assert not default_storage.exists(ckpt) and "checkpoint" not in run.data_snapshot
    assert execute_training_run(str(run.pk))["skipped"] is True  # done: nothing more


@pytest.mark.django_db
def test_generator_run_config_is_validated_and_needs_a_proxy(staff_client):
    r = staff_client.post("/api/training-runs/",
                          {"kind": "generator", "config": {"train": {"batch_size": 0}}},
                          content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "config"
    assert "batch_size" in r.json()["errors"][0]["detail"]
    r = staff_client.post("/api/training-runs/",
                          {"kind": "generator", "config": {"deid": {"tau_a": 2}}},
                          content_type="application/json")
    assert r.status_code == 400 and "deid.tau_a" in r.json()["errors"][0]["detail"]
    assert not TrainingRun.objects.exists()
    run = TrainingRun.objects.create(kind=ModelKind.GENERATOR, config=FAST_RUN)
    out = generator_runner.execute_generator_run(str(run.pk))
    run.refresh_from_db()
    assert out["status"] == "failed" and "no promoted human proxy" in run.error


def test_the_gate_compares_held_out_success_rates():
    assert generator_runner.generator_gate({"success_rate": 0.5}, None, 0.0)["passed"]
    assert generator_runner.generator_gate({"success_rate": 0.5}, {"success_rate": 0.5}, 0.0)[
        "passed"]
    worse = generator_runner.generator_gate({"success_rate": 0.4}, {"success_rate": 0.5}, 0.0)
    assert not worse["passed"] and "0.400 < promoted generator's 0.500" in worse["reasons"][0]
    assert generator_runner.generator_gate({"success_rate": 0.45}, {"success_rate": 0.5}, 0.1)[
        "passed"]
    assert not generator_runner.generator_gate({"success_rate": float("nan")}, None, 0.0)[
        "passed"]


# --- the registry keeps kinds apart ---------------------------------------------------------


@pytest.mark.django_db
def test_registry_and_rollback_treat_generators_like_proxies_but_apart(
    staff_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        proxy = promote_untrained_proxy()
        g1 = register_generator(0)
        g2 = register_generator(1)
    g1.refresh_from_db()
    proxy.refresh_from_db()
    assert (g1.number, g2.number) == (1, 2) and g1.status == "retired"
    assert proxy.status == "promoted"  # promoting generators never retires the proxy
    assert promoted_version().pk == proxy.pk  # the default kind is the human proxy
    with pytest.raises(ValueError):
        load_version_model(g2)  # a generator never loads as a proxy
    # Promoting a generator does not re-score outputs (score-A comes from proxies only).
    from models_app.jobs.rescoring import rescore_outputs

    assert rescore_outputs(str(g2.pk))["skipped"] == "not a human proxy"
    r = staff_client.post("/api/model-versions/rollback/?kind=generator")
    assert r.status_code == 200 and r.json()["number"] == 1 and r.json()["kind"] == "generator"
    assert promoted_version(ModelKind.GENERATOR).pk == g1.pk
    assert promoted_version(ModelKind.HUMAN_PROXY).pk == proxy.pk
    r = staff_client.post("/api/model-versions/rollback/?kind=bogus")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "kind"
    # A generator run in progress does not hold back a proxy run, and v.v.
    TrainingRun.objects.create(kind=ModelKind.GENERATOR, status="running")
    assert services.request_training_run().kind == "human_proxy"
    with pytest.raises(AppError):
        services.request_generator_run()  # one generator run at a time


# --- jobs -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_job_method_is_validated_and_needs_a_promoted_generator(
    staff_client, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        promote_untrained_proxy()
    r = _post_job(staff_client, {"image": str(source.pk), "params": {"method": "generator"}})
    assert r.status_code == 409, r.content
    err = r.json()["errors"][0]
    assert err["code"] == "no_promoted_generator" and err["field"] == "params.method"
    r = _post_job(staff_client, {"image": str(source.pk), "params": {"method": "hybrid"}})
    assert r.status_code == 409
    r = _post_job(staff_client, {"image": str(source.pk), "params": {"method": "gan"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.method"
    r = _post_job(staff_client, {"image": str(source.pk),
                                 "params": {"generator_version": "x"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.generator_version"
    with django_capture_on_commit_callbacks(execute=True):
        register_generator()
    r = _post_job(staff_client, {"image": str(source.pk),
                                 "params": {"method": "generator", "parameterisation": "pixels"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "params.parameterisation"
    assert not DeidJob.objects.exists()
    r = _post_job(staff_client, {"image": str(source.pk)})
    assert r.status_code == 201 and r.json()["params"]["method"] == "iterative"


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_generator_job_runs_through_the_api_on_the_worker(
    staff_client, settings, celery_worker_process, face_jpeg
):
    settings.MEDIA_ROOT = celery_worker_process.media_root
    promote_untrained_proxy()
    gen = register_generator()
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    r = _post_job(staff_client, {"image": str(src.pk),
                                 "params": {**FAST_JOB, "method": "generator"}})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["params"]["method"] == "generator"
    assert body["params"]["generator_version"] == str(gen.pk)

    def done() -> DeidJob | None:
        job = DeidJob.objects.get(pk=body["id"])
        return job if job.status not in ("queued", "running") else None

    job = wait_for(done, timeout=240, interval=0.5, what="generator job")
    assert job.status in ("succeeded", "finished"), job.error
    assert job.stop_reason in ("success", "single_pass")
    assert job.iterations_done == 0  # one pass, no iteration of the loop
    detail = staff_client.get(f"/api/deid-jobs/{job.pk}/").json()
    assert [t["index"] for t in detail["trajectory"]] == [0]
    assert detail["final_detail"]["generator"] == {"version": 1, "method": "generator",
                                                  "batched_faces": 1}
    # Score-B as every job: the dlib runtime on the saved file after fresh detection.
    assert job.final_detail["detected_in_saved_file"] is True
    assert job.final_score_b == job.final_detail["saved_file_score_b"]
    assert 0.0 < job.final_score_b <= 1.0 and 0.0 <= job.final_score_a <= 1.0
    confirmed = (job.stop_reason == "success" and job.final_score_b >= job.params["tau_b"])
    assert (job.status == "succeeded") == confirmed
    out = job.output
    assert out.kind == "output" and out.parent_id == src.pk
    # The output differs from the source: the generator's change was applied.
    assert out.sha256 != src.sha256


@pytest.mark.django_db  # not transactional: nothing is sent to a worker, all runs here
def test_a_batch_runs_the_generator_batched_and_the_hybrid_starts_from_it(lfw_dir):
    promote_untrained_proxy()
    register_generator()
    subject = get_or_create_subject("subject-2")
    for f in sorted((lfw_dir / "Abdullah_Gul").glob("*.jpg"))[:3]:
        ingest_image(f.read_bytes(), subject=subject)
    from models_app.jobs.services import create_batch

    batch = create_batch(subjects=[subject], params={**FAST_JOB, "method": "generator"})
    jobs = list(batch.jobs.order_by("created", "pk"))
    assert len(jobs) == 3
    out = job_runner.execute_deid_job(str(jobs[0].pk))
    assert len(out["batched"]) == 2  # one pass over the batch's three faces
    for j in jobs:
        j.refresh_from_db()
        assert j.status in ("succeeded", "finished"), j.error
        assert j.final_detail["generator"]["batched_faces"] == 3
    # The other deliveries find their jobs done.
    assert job_runner.execute_deid_job(str(jobs[1].pk))["skipped"] is True

    # The hybrid: the loop from the generator's output (record 0 is that output).
    from models_app.jobs.services import create_deid_job

    one = create_deid_job(jobs[0].source, {**FAST_JOB, "method": "hybrid"})
    res = job_runner.execute_deid_job(str(one.pk))
    one.refresh_from_db()
    assert res["status"] in ("succeeded", "finished"), one.error
    assert one.final_detail["generator"] == {"version": 1, "method": "hybrid",
                                             "start": "output"}
    # Record 0 of the hybrid is the generator's output image (the recogniser's distance from
    # the source is the single pass's), with the loop's own parameters at the identity on
    # top of it (no prior, no change of its own yet); the iterative loop's record 0 is the
    # unchanged source.
    single = create_deid_job(jobs[0].source, {**FAST_JOB, "method": "generator"})
    job_runner.execute_deid_job(str(single.pk))  # alone: the same EOT draws as the hybrid
    it0 = one.iterations.get(index=0).loss
    gen0 = single.iterations.get(index=0).loss
    assert it0["theta0_distance"] == pytest.approx(gen0["theta0_distance"], rel=1e-3)
    assert gen0["theta0_distance"] > 1e-4
    assert it0["prior"] == 0.0 and gen0["prior"] > 0.0
    assert it0["change_colour_bias"] == 0.0 and gen0["change_colour_bias"] > 0.01
    plain = create_deid_job(jobs[0].source, FAST_JOB)
    job_runner.execute_deid_job(str(plain.pk))
    p0 = plain.iterations.get(index=0).loss
    # Same EOT draws, another image: the hybrid's record 0 is not the source.
    assert p0["change_colour_bias"] == 0.0 and p0["prior"] == 0.0
    assert abs(p0["theta0_distance"] - it0["theta0_distance"]) > 1e-3


@pytest.mark.django_db
def test_a_new_proxy_retrains_the_generator_in_use(monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr("deidplatform.dispatch.enqueue_on_commit",
                        lambda name, *a, **kw: sent.append(name))
    with django_capture_on_commit_callbacks(execute=True):
        promote_untrained_proxy()  # no generator in use yet: nothing to retrain
    assert not TrainingRun.objects.filter(kind=ModelKind.GENERATOR).exists()
    with django_capture_on_commit_callbacks(execute=True):
        register_generator()  # a generator's own promotion retrains nothing
        assert not TrainingRun.objects.filter(kind=ModelKind.GENERATOR).exists()
        promote_untrained_proxy()
    runs = TrainingRun.objects.filter(kind=ModelKind.GENERATOR)
    assert runs.count() == 1 and runs[0].status == "queued"
    assert "models_app.tasks.train_generator" in sent


@pytest.mark.django_db
def test_erasure_takes_faces_out_of_generator_run_snapshots():
    from models_app.training.erasure import scrub_snapshots

    a, b, c = "11111111-aaaa", "22222222-bbbb", "33333333-cccc"
    run = TrainingRun.objects.create(kind=ModelKind.GENERATOR, data_snapshot={
        "train_faces": [a, b], "held_out_faces": [c], "proxy_version": "p"})
    assert scrub_snapshots([b, c], []) == 1
    run.refresh_from_db()
    snap = run.data_snapshot
    assert snap["train_faces"] == [a] and snap["held_out_faces"] == []
    assert snap["erased_faces"] == 2 and b not in json.dumps(snap)


def test_a_round_can_make_its_outputs_with_the_generator():
    """A round's ``job_params`` take the method: its batch then runs the generator."""
    from models_app.rounds.services import validated_config

    assert validated_config({"job_params": {"method": "generator"}})["job_params"][
        "method"] == "generator"
    assert validated_config({})["job_params"]["method"] == "iterative"
    with pytest.raises(AppError) as e:
        validated_config({"job_params": {"method": "gan"}})
    assert e.value.field == "config.job_params.method"
