"""The human proxy's life cycle end to end on the real database and a real worker:
training run → candidate → gate → promotion; a failed gate; forced promotion; rollback;
the retraining triggers; bad input."""

from __future__ import annotations

import pytest

from models_app.models import ModelVersion, TrainingRun
from models_app.training import runner, services
from models_app.training.selectors import clear_model_cache
from tests.helpers import wait_for
from tests.models_app.fixtures import ingest_subjects, label_pairs, promote_untrained_proxy

# Small, fast runs: a handful of natural pairs beside the human labels, 3 epochs.
FAST = {"natural_same": 20, "natural_different": 20, "train": {"stop": {"max_epochs": 3}}}


@pytest.fixture
def worker_media(settings, celery_worker_process):
    """Files written by this test must be where the worker reads them."""
    settings.MEDIA_ROOT = celery_worker_process.media_root
    return celery_worker_process.media_root


@pytest.fixture
def labelled(lfw_dir):
    from tests.ratings.factories import make_campaign

    groups = ingest_subjects(lfw_dir, n_subjects=12, per_subject=3)
    n = label_pairs(groups, make_campaign())
    return groups, n


def _wait(run_id, timeout=240) -> TrainingRun:
    def finished() -> TrainingRun | None:
        run = TrainingRun.objects.get(pk=run_id)
        return run if run.status in ("succeeded", "failed") else None

    return wait_for(finished, timeout=timeout, interval=0.5, what=f"training run {run_id}")


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_train_gate_promote_fail_force_rollback(worker_media, labelled, staff_client):
    _, n_labels = labelled
    r = staff_client.post("/api/training-runs/", {"config": FAST}, content_type="application/json")
    assert r.status_code == 202, r.content
    run = _wait(r.json()["id"])
    assert run.status == "succeeded", run.error
    assert run.stop_reason in ("max_epochs", "plateau", "target_reached")
    assert len(run.history) >= 1 and "val_loss" in str(run.history[0])
    assert run.labels_used == n_labels
    split = run.data_snapshot["split"]
    assert not set(split["train"]) & set(split["test"])  # disjoint by subject
    v1 = ModelVersion.objects.filter(training_run=run).first()
    assert v1 is not None
    assert v1.status == "promoted" and v1.number == 1 and v1.is_prior is False, v1.gate
    held = v1.metrics["held_out"]
    assert v1.metrics["held_out_set"] in ("human", "human+natural")
    assert 0.0 <= held["auc"] <= 1.0 and 0.0 <= held["brier"] <= 1.0 and "ece" in held
    assert "human_ceiling" in held.get("human", {}) or held.get("human") is None
    png = staff_client.get(f"/api/model-versions/{v1.pk}/reliability-diagram/")
    assert png.status_code == 200 and b"".join(png.streaming_content).startswith(b"\x89PNG")

    # A second run that must beat v1 by an impossible margin fails its gate.
    strict = {**FAST, "gate_tolerance": -2.0}
    r = staff_client.post("/api/training-runs/", {"config": strict}, content_type="application/json")
    run2 = _wait(r.json()["id"])
    assert run2.status == "succeeded", run2.error
    v2 = run2.model_version
    assert v2.status == "rejected" and v2.parent_id == v1.pk
    assert v2.gate["passed"] is False and v2.gate["incumbent"] is not None
    v1.refresh_from_db()
    assert v1.status == "promoted"

    # Promoting it is refused with the reason; the promoted version stays.
    r = staff_client.post(f"/api/model-versions/{v2.pk}/promote/", {}, content_type="application/json")
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "failed_gate"
    assert ModelVersion.objects.get(status="promoted").pk == v1.pk
    # An operator may force it, and roll back.
    r = staff_client.post(
        f"/api/model-versions/{v2.pk}/promote/", {"force": True}, content_type="application/json"
    )
    assert r.status_code == 200 and r.json()["status"] == "promoted"
    r = staff_client.post("/api/model-versions/rollback/", {}, content_type="application/json")
    assert r.status_code == 200 and r.json()["number"] == 1
    assert ModelVersion.objects.get(status="promoted").pk == v1.pk


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_scheduled_retraining_runs_through_beat_task(worker_media, labelled):
    from models_app.training.tasks import maybe_retrain_task

    out = maybe_retrain_task.delay(scheduled=True).get(timeout=60)
    assert out["started"] is not None
    run = _wait(out["started"])
    assert run.trigger == "schedule"
    # Defaults train longer than FAST; the run still has to succeed on real data.
    assert run.status == "succeeded", run.error


@pytest.mark.django_db
def test_new_label_threshold_triggers_a_run(settings, labelled, django_capture_on_commit_callbacks):
    settings.DEID_RETRAIN_MIN_NEW_LABELS = 1000
    assert services.maybe_retrain() is None
    settings.DEID_RETRAIN_MIN_NEW_LABELS = labelled[1]
    with django_capture_on_commit_callbacks() as sent:
        run = services.maybe_retrain()
    assert run is not None and run.trigger == "new_labels" and len(sent) == 1
    # Nothing new since that run: no second one.
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded")
    assert services.maybe_retrain() is None


@pytest.mark.django_db
def test_beat_schedules_exist_and_are_editable():
    from django_celery_beat.models import PeriodicTask

    names = set(PeriodicTask.objects.filter(task="models_app.tasks.maybe_retrain").values_list("name", flat=True))
    assert names == {"human proxy: retrain after N new labels", "human proxy: weekly retraining"}


@pytest.mark.django_db
def test_too_few_labels_fails_the_run_clearly(lfw_dir):
    ingest_subjects(lfw_dir, n_subjects=2, per_subject=2)
    run = TrainingRun.objects.create(config={"natural_same": 2, "natural_different": 2})
    out = runner.execute_training_run(str(run.pk))
    run.refresh_from_db()
    assert out["status"] == "failed" and run.status == "failed"
    assert "pairs" in run.error.lower()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_labels_from_a_single_subject_fail_clearly(lfw_dir):
    from ratings.models import Pair, PairLabel
    from tests.ratings.factories import make_campaign

    groups = ingest_subjects(lfw_dir, n_subjects=1, per_subject=3)
    camp = make_campaign()
    a, b, c = groups[0]
    for x, y in ((a, b), (b, c), (a, c)) * 8:
        p = Pair.objects.create(campaign=camp, image_a=x, image_b=y, kind="deid")
        PairLabel.objects.create(pair=p, score_a=0.7, same=True, n_judgments=3, method="dawid_skene")
    run = TrainingRun.objects.create(config={"natural_same": 0, "natural_different": 0})
    runner.execute_training_run(str(run.pk))
    run.refresh_from_db()
    assert run.status == "failed" and "subject" in run.error.lower()


@pytest.mark.django_db
def test_bad_training_config_is_refused_naming_the_field(staff_client):
    r = staff_client.post("/api/training-runs/", {"config": {"bogus": 1}}, content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "config"
    r = staff_client.post(
        "/api/training-runs/", {"config": {"train": {"stop": {"max_epochs": 0}}}},
        content_type="application/json",
    )
    assert r.status_code == 400 and "max_epochs" in r.json()["errors"][0]["detail"]
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_a_second_run_while_one_is_queued_is_refused(staff_client):
    TrainingRun.objects.create(status="queued")
    r = staff_client.post("/api/training-runs/", {}, content_type="application/json")
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "run_in_progress"


@pytest.mark.django_db
def test_corrupt_promoted_file_fails_the_run_and_keeps_the_promotion(labelled):
    v1 = promote_untrained_proxy()
    with v1.file.storage.open(v1.file.name, "wb") as fh:
        fh.write(b"not safetensors")
    run = TrainingRun.objects.create(config=FAST)
    clear_model_cache()
    out = runner.execute_training_run(str(run.pk))
    run.refresh_from_db()
    assert out["status"] == "failed" and "checksum" in run.error
    assert ModelVersion.objects.get(status="promoted").pk == v1.pk
    assert ModelVersion.objects.count() == 1
