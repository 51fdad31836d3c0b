"""Queue depths and workers from the real broker (Redis in CI): a waiting message is
counted, a live worker is seen, and a dead broker reads "unknown" quickly, not an error."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from django.urls import reverse

from deidplatform.celery import GPU_QUEUE, PING, app
from deidplatform.dashboard import probes

pytestmark = pytest.mark.django_db


@pytest.fixture
def real_broker(settings):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("needs a Redis broker (CELERY_BROKER_URL)")
    yield app
    with app.connection_for_write() as conn:  # leave no test message behind
        conn.default_channel.queue_purge(GPU_QUEUE)


def test_a_waiting_message_is_counted(real_broker):
    before = probes.queue_depths(app)[GPU_QUEUE]
    assert isinstance(before, int)
    app.send_task(PING, queue=GPU_QUEUE)
    assert probes.queue_depths(app)[GPU_QUEUE] == before + 1


def test_no_worker_answering_reads_unknown_workers(real_broker, staff_client):
    data = staff_client.get(reverse("dashboard:live-celery")).json()
    assert data["queue-gpu-depth"].isdigit() and data["queue-cpu-depth"].isdigit()
    assert data["workers-alive"] == "unknown"  # nobody answered: unknown, not zero


def test_a_dead_broker_reads_unknown_and_fast(staff_client, monkeypatch):
    # Celery prefers the CELERY_BROKER_URL variable to the app's own setting.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    # Not set as the current app: shared tasks elsewhere must keep resolving to ours.
    dead = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)
    monkeypatch.setattr(probes, "app", dead)
    t = time.monotonic()
    data = staff_client.get(reverse("dashboard:live-celery")).json()
    assert time.monotonic() - t < 5
    assert data["queue-gpu-depth"] == "unknown" and data["queue-cpu-depth"] == "unknown"
    assert data["workers-alive"] == "unknown"
    # The overview itself never waits for the broker: it renders, and asks in the background.
    assert staff_client.get(reverse("dashboard:overview")).status_code == 200


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_live_worker_is_seen(celery_worker_process, staff_client):
    from tests.helpers import wait_for

    wait_for(lambda: probes.workers(app, timeout=1.0) is not None, timeout=30,
             what="the worker to answer inspect")
    data = staff_client.get(reverse("dashboard:live-celery")).json()
    assert data["workers-alive"] == "1" or int(data["workers-alive"]) >= 1
    assert data["workers-names"].startswith("test-")
