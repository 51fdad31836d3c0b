"""Dispatch that survives a broker outage (issue 12, defect 2), without a worker: a dead
broker answers 503 before anything is stored; a send that fails after commit never fails
the request and leaves the row for the sweeper; runs cancel; a silent run is re-queued."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from deidplatform import celery as dispatch
from deidplatform import dispatch as sweeper
from models_app.models import TrainingRun
from models_app.training import runner, services

CLOSED_PORT = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def _fresh_probe():
    """The cached broker reachability starts (and ends) unknown in every test."""
    dispatch.clear_broker_probe()
    yield
    dispatch.clear_broker_probe()


@pytest.fixture
def dead_broker(monkeypatch):
    """The broker refuses connections (the probe connects to the configured URL)."""
    monkeypatch.setattr(dispatch.app.conf, "broker_write_url", CLOSED_PORT)


@pytest.fixture
def failing_send(monkeypatch):
    """The broker answered the probe but the publish after commit fails."""
    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(dispatch.app, "send_task", refuse)  # what apply_async calls too
    monkeypatch.setattr(dispatch, "broker_reachable", lambda: True)


@pytest.fixture
def sent(monkeypatch):
    """What the sweeper sends (instead of the broker)."""
    out: list[tuple] = []

    def record(name, *args, **kwargs):
        out.append((name, *args))
        return True

    monkeypatch.setattr(sweeper, "send_now", record)
    return out


def _post(client, body=None):
    return client.post("/api/training-runs/", body or {"config": {}}, content_type="application/json")


@pytest.mark.django_db
def test_dead_broker_answers_503_fast_and_stores_no_run(staff_client, dead_broker):
    t0 = time.monotonic()
    r = _post(staff_client)
    elapsed = time.monotonic() - t0
    assert r.status_code == 503, r.content
    assert r.json()["errors"][0]["code"] == "broker_unavailable"
    assert elapsed < 3  # it took ~20 s before the fix
    assert not TrainingRun.objects.exists()  # nothing wedged: the next request is free


@pytest.mark.django_db
def test_failed_send_after_commit_leaves_a_queued_run_that_the_sweeper_sends(
    staff_client, failing_send, sent, django_capture_on_commit_callbacks, settings
):
    with django_capture_on_commit_callbacks(execute=True):
        r = _post(staff_client)
    assert r.status_code == 202, r.content  # committed: the failed send does not fail it
    run = TrainingRun.objects.get()
    assert run.status == "queued" and run.dispatched is None
    # Not yet: within the grace period the send may still be on its way.
    assert services.sweep_runs()["runs_resent"] == 0 and sent == []
    later = timezone.now() + timedelta(seconds=settings.DEID_DISPATCH_GRACE_S + 1)
    assert services.sweep_runs(now=later)["runs_sent"] == 1
    assert sent == [(dispatch.TRAIN_PROXY, str(run.pk))]
    run.refresh_from_db()
    assert run.dispatched is not None
    # Sent once: the next sweep leaves it alone (until DEID_REDISPATCH_S: a lost message).
    assert services.sweep_runs(now=later)["runs_sent"] == 1 - 1


@pytest.mark.django_db
def test_cancel_unblocks_new_runs(staff_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        first = _post(staff_client).json()["id"]
        assert _post(staff_client).json()["errors"][0]["code"] == "run_in_progress"
    r = staff_client.post(f"/api/training-runs/{first}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert staff_client.post(f"/api/training-runs/{first}/cancel/").status_code == 409
    with django_capture_on_commit_callbacks():
        assert _post(staff_client).status_code == 202  # a cancelled run blocks nothing
    # A late delivery of the cancelled run's message does nothing.
    assert runner.execute_training_run(first) == {"run": first, "skipped": True}


@pytest.mark.django_db
def test_the_runner_stops_at_the_next_epoch_once_cancelled_or_taken_over():
    run = runner.mark_running(str(TrainingRun.objects.create().pk))
    on_epoch = runner._history_saver(run)
    assert on_epoch({"epoch": 1}) is True
    beat = TrainingRun.objects.get(pk=run.pk).heartbeat
    services.cancel_training_run(run)
    assert on_epoch({"epoch": 2}) is False  # train_proxy stops with stop_reason "cancelled"
    # Taken over by a later attempt (the sweeper re-queued it): the old one stops too.
    other = TrainingRun.objects.create()
    mine = runner.mark_running(str(other.pk))
    TrainingRun.objects.filter(pk=other.pk).update(
        heartbeat=beat - timedelta(hours=1)  # as if it went silent
    )
    assert runner.mark_running(str(other.pk)) is not None  # the stale owner is replaced
    assert runner._history_saver(mine)({"epoch": 1}) is False


@pytest.mark.django_db
def test_a_delivery_of_a_live_run_is_dropped_and_a_silent_run_is_requeued(sent, settings):
    run = runner.mark_running(str(TrainingRun.objects.create().pk))
    assert runner.mark_running(str(run.pk)) is None  # its owner beats: a duplicate
    assert services.sweep_runs()["runs_requeued"] == 0
    later = timezone.now() + timedelta(seconds=settings.DEID_HEARTBEAT_STALE_S + 1)
    out = services.sweep_runs(now=later)
    assert out["runs_requeued"] == 1 and sent == [(dispatch.TRAIN_PROXY, str(run.pk))]
    run.refresh_from_db()
    assert run.status == "queued" and run.claim is None
    assert runner.mark_running(str(run.pk)) is not None  # the next delivery takes it


@pytest.mark.django_db
def test_a_label_update_lost_with_the_broker_is_requeued(failing_send, monkeypatch, settings):
    """A judgment commits and marks labels_pending; its update could not be sent. Nothing
    raises, and the sweeper re-queues the update once the campaign has waited long enough."""
    from ratings.models import Campaign
    from ratings.services import labels
    from tests.ratings.factories import make_campaign

    campaign = make_campaign()
    labels.mark_labels_pending(campaign.pk)  # outside a transaction: sent at once, and fails
    assert Campaign.objects.get(pk=campaign.pk).labels_pending
    out = []
    monkeypatch.setattr(labels, "send_now", lambda name, *a: out.append((name, *a)) or True)
    assert labels.requeue_stuck_label_updates() == 0  # not stuck yet
    later = timezone.now() + timedelta(seconds=settings.DEID_LABELS_STALE_S + 1)
    assert labels.requeue_stuck_label_updates(now=later) == 1
    assert out == [(dispatch.UPDATE_CAMPAIGN_LABELS, campaign.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_judgment_commits_and_answers_201_when_its_label_update_cannot_be_sent(failing_send):
    """It answered 500 although committed (issue 12); now 201, and labels_pending stays set
    for the sweeper."""
    import json

    from django.test import Client

    from ratings.models import Campaign, Judgment, Rater
    from tests.ratings.factories import add_pairs, make_campaign, make_images

    campaign = make_campaign(judgments_per_pair=2)
    add_pairs(campaign, 2, images=make_images(4))
    client = Client(enforce_csrf_checks=True)
    r = client.get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": "P1", "STUDY_ID": "S",
                                               "SESSION_ID": "X"})
    assert r.status_code == 302, r.content
    rater = Rater.objects.get(campaign=campaign, external_id="P1")
    rater.consented_at = rater.created
    rater.save()
    assert client.get(f"/rate/{campaign.slug}/").status_code == 200
    token = {"HTTP_X_CSRFTOKEN": client.cookies["csrftoken"].value}

    def post(url, body):
        return client.post(url, data=json.dumps(body), content_type="application/json", **token)

    base = f"/api/ratings/rate/{campaign.slug}"
    nxt = post(f"{base}/next", {})
    assert nxt.status_code == 200, nxt.content
    first = nxt.json()["assignments"][0]
    r = post(f"{base}/assignments/{first['id']}/judgment",
             {"same": True, "confidence": 3, "response_ms": 1500})
    assert r.status_code == 201, r.content  # recorded, not 500
    assert Judgment.objects.filter(rater=rater).count() == 1
    assert Campaign.objects.get(pk=campaign.pk).labels_pending


@pytest.mark.django_db
def test_the_sweeper_is_scheduled_every_minute_on_the_cpu_queue():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task=dispatch.SWEEP_STALE_WORK)
    assert task.enabled and task.queue == "cpu"
    assert (task.interval.every, task.interval.period) == (1, "minutes")
    assert dispatch.app.amqp.router.route({}, dispatch.SWEEP_STALE_WORK)["queue"].name == "cpu"
