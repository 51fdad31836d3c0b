"""The fault suite (issue 12): real PostgreSQL, a real Redis, real web and worker processes.

* kill -9 a worker (and its pool child) mid-job and mid-training: the sweeper re-queues the
  silent work within the configured time, another worker finishes it, one output;
* the broker goes away under the web process: fast 503, no wedged row, and what committed
  meanwhile is delivered once the broker is back;
* a statement that runs past the web's statement timeout answers a clean 503 JSON.

Each test counts what was lost: nothing.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import connection

from deidplatform.celery import RUN_DEID_JOB, TRAIN_PROXY
from models_app.faces.services import get_or_create_subject, ingest_image
from models_app.models import DeidIteration, DeidJob, FaceImage, ModelVersion, TrainingRun
from tests.faults.conftest import FAULT_ENV, wait_until
from tests.models_app.fixtures import ingest_subjects, label_pairs, promote_untrained_proxy

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

STALE_S = int(FAULT_ENV["DEID_HEARTBEAT_STALE_S"])
# Long enough to be killed mid-way, short enough to finish quickly once resumed.
LONG_JOB = {"max_iterations": 8, "convergence_window": 50, "eot": {"confirm_samples": 1}}
EPOCHS = 300
TERMINAL = ("succeeded", "finished", "failed", "cancelled")


def _job(job_id) -> DeidJob:
    return DeidJob.objects.get(pk=job_id)


def _operator():
    return get_user_model().objects.create_superuser("ops", "ops@example.org", "pw")


def _sweep_until(cluster, probe, timeout: float, what: str):
    """Run the sweeper every second (beat does it every minute) until ``probe`` holds."""
    def step():
        cluster.sweep()
        return probe()

    return wait_until(step, timeout, what, interval=1.0)


def test_worker_killed_mid_job_resumes_with_one_output(cluster, face_jpeg):
    promote_untrained_proxy()
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    job = DeidJob.objects.create(source=src, params=LONG_JOB,
                                 proxy_version=ModelVersion.objects.get(status="promoted"))
    first = cluster.worker()
    cluster.send(RUN_DEID_JOB, str(job.pk))
    wait_until(lambda: _job(job.pk).iterations_done >= 2, 180, "two iterations")
    first.kill9()
    killed_at = time.monotonic()
    after_kill = _job(job.pk)
    assert after_kill.status == "running"  # its message sits unacknowledged in Redis

    cluster.worker()
    done, _ = _sweep_until(cluster, lambda: _job(job.pk).status in TERMINAL, 180, "the job")
    recovered_s = time.monotonic() - killed_at
    job = _job(job.pk)
    assert job.status in ("succeeded", "finished"), job.error
    assert job.attempts == 2  # the redelivery after the kill, not a third concurrent run
    # Nothing lost, nothing twice: contiguous iterations, exactly one output.
    idx = list(DeidIteration.objects.filter(job=job).values_list("index", flat=True))
    assert idx == list(range(job.iterations_done + 1))
    assert idx[: after_kill.iterations_done + 1] == list(range(after_kill.iterations_done + 1))
    # One final output plus the ladder's images (rungs crossed at one iteration share one),
    # each stored once.
    rungs = [r["threshold"] for r in job.ladder]
    assert len(rungs) == len(set(rungs))
    rung_images = {r["image"] for r in job.ladder}
    outputs = FaceImage.objects.filter(kind="output", parent=src)
    assert outputs.count() == 1 + len(rung_images - {str(job.output_id)})
    assert job.output_id is not None
    # Stale after STALE_S, swept every second; the rest is the resumed work itself.
    assert recovered_s < 150, recovered_s


def test_worker_killed_mid_training_reruns_to_one_version(cluster, lfw_dir):
    from tests.ratings.factories import make_campaign

    label_pairs(ingest_subjects(lfw_dir, n_subjects=12, per_subject=3), make_campaign())
    run = TrainingRun.objects.create(config={
        "natural_same": 10, "natural_different": 10,
        "train": {"min_val_pairs": 1, "stop": {"max_epochs": EPOCHS, "patience": EPOCHS}},
    })
    first = cluster.worker()
    cluster.send(TRAIN_PROXY, str(run.pk))

    def epochs() -> int:
        r = TrainingRun.objects.get(pk=run.pk)
        assert r.status in ("queued", "running"), r.error
        return len(r.history)

    wait_until(lambda: epochs() >= 2, 180, "two epochs")
    first.kill9()
    assert TrainingRun.objects.get(pk=run.pk).status == "running"
    cluster.worker()
    _sweep_until(
        cluster, lambda: TrainingRun.objects.get(pk=run.pk).status in TERMINAL, 240,
        "the training run",
    )
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert len(run.history) == EPOCHS  # started over cleanly: one history, not two mixed
    # Exactly one version came out of it.
    assert ModelVersion.objects.filter(training_run=run).count() == 1
    assert ModelVersion.objects.count() == 1


def test_broker_outage_fails_fast_and_recovers(cluster, face_jpeg):
    promote_untrained_proxy()
    src = ingest_image(face_jpeg, subject=get_or_create_subject("subject-1")).image
    _operator()
    _, url = cluster.web()
    http = requests.Session()
    http.auth = ("ops", "pw")
    def job_body(n: int) -> dict:  # different lengths: different outputs
        return {"image": str(src.pk), "params": {"max_iterations": n, "convergence_window": 50,
                                                 "eot": {"confirm_samples": 1}}}

    # Healthy: the job is accepted (and its reachability is cached for a few seconds).
    r = http.post(f"{url}/api/deid-jobs/", json=job_body(1), timeout=30)
    assert r.status_code == 201, r.text
    sent_ok = r.json()["id"]

    # The broker dies while the probe still says it is up: the job commits, its send fails
    # after commit, fast; the row is left queued and unsent for the sweeper.
    cluster.redis.stop()
    t0 = time.monotonic()
    r = http.post(f"{url}/api/deid-jobs/", json=job_body(2), timeout=30)
    assert r.status_code == 201, r.text
    assert time.monotonic() - t0 < 3
    unsent = r.json()["id"]
    assert _job(unsent).dispatched is None and _job(sent_ok).dispatched is not None

    # Now it is known down: fast 503 JSON, and no row for it.
    before = (DeidJob.objects.count(), TrainingRun.objects.count())
    for path, body in (("/api/deid-jobs/", job_body(3)), ("/api/training-runs/", {"config": {}})):
        t0 = time.monotonic()
        r = http.post(f"{url}{path}", json=body, timeout=30)
        elapsed = time.monotonic() - t0
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.json()["errors"][0]["code"] == "broker_unavailable"
        assert elapsed < 3, (path, elapsed)  # it took ~20 s before
    assert (DeidJob.objects.count(), TrainingRun.objects.count()) == before
    assert not TrainingRun.objects.exists()  # nothing blocks the next run

    # The broker comes back (empty: the first job's message died with it too). The sweeper
    # re-sends the unsent job at once and the lost one after DEID_REDISPATCH_S.
    cluster.redis.start()
    cluster.worker(DEID_REDISPATCH_S="5")
    _sweep_until(
        cluster, lambda: all(_job(j).status in TERMINAL for j in (sent_ok, unsent)), 240,
        "both jobs",
    )
    outputs = set()
    for j in (sent_ok, unsent):
        job = _job(j)
        assert job.status in ("succeeded", "finished"), job.error
        assert job.attempts == 1  # delivered once each
        # Its own output, or the identical one stored once for the other job.
        twin = job.final_detail.get("same_output_as_job")
        outputs.add(job.output_id if twin is None else _job(twin).output_id)
    assert None not in outputs
    assert FaceImage.objects.filter(kind="output").count() == len(outputs)
    # And the web process works again without a restart.
    deadline = time.monotonic() + 10
    while (r := http.post(f"{url}/api/training-runs/", json={"config": {}}, timeout=30)).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert r.status_code == 202, r.text


def test_slow_statement_answers_a_clean_503(cluster):
    _operator()
    _, url = cluster.web(DB_STATEMENT_TIMEOUT_MS="300")
    http = requests.Session()
    http.auth = ("ops", "pw")
    assert http.get(f"{url}/api/training-runs/", timeout=30).status_code == 200
    s = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"] or "postgres",
        password=s["PASSWORD"] or None, dbname=s["NAME"],
    )
    with psycopg.connect(conninfo) as lock:
        # Another session holds the table: every statement on it waits, past the timeout.
        lock.execute("LOCK TABLE models_app_trainingrun IN ACCESS EXCLUSIVE MODE")
        for method, body in (("get", None), ("post", {"config": {}})):
            t0 = time.monotonic()
            r = http.request(method, f"{url}/api/training-runs/", json=body, timeout=30)
            assert r.status_code == 503, (method, r.status_code, r.text[:500])
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["errors"][0]["code"] == "database_unavailable"
            assert "Traceback" not in r.text and "statement timeout" not in r.text
            assert time.monotonic() - t0 < 5
        lock.rollback()
    # Released: it answers again, and the refused POST left nothing behind.
    r = http.get(f"{url}/api/training-runs/", timeout=30)
    assert r.status_code == 200
    assert not TrainingRun.objects.exists()
