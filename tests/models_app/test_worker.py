"""A task goes through the real broker to a real worker process and back."""

from __future__ import annotations

import base64

import pytest

from models_app import tasks
from models_app.models import FaceImage


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_ping_round_trip_through_real_worker(celery_worker_process):
    result = tasks.ping_task.delay("hello")
    assert result.get(timeout=60) == {"value": "hello", "face_images": 0}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_gpu_queue_task_runs_and_reports_device(celery_worker_process):
    from models_app.device import get_device

    result = tasks.device_info_task.delay()
    # The worker runs where this test runs, with the same environment: same device.
    assert result.get(timeout=60) == {"device": str(get_device())}
    # Routed explicitly: device_info lives on the gpu queue.
    from deidplatform.celery import app

    assert app.amqp.router.route({}, "models_app.tasks.device_info")["queue"].name == "gpu"
    assert app.amqp.router.route({}, "models_app.tasks.ping")["queue"].name == "cpu"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_ingests_into_the_shared_database(celery_worker_process, face_jpeg):
    out = tasks.ingest_file_task.delay(base64.b64encode(face_jpeg).decode(), "subject-9").get(timeout=90)
    assert out["outcome"] == "imported"
    img = FaceImage.objects.get(pk=out["id"])
    assert img.subject.label == "subject-9"
    assert (celery_worker_process.media_root / img.file.name).exists()


@pytest.mark.django_db(transaction=True)
def test_tasks_are_sent_on_commit_only(monkeypatch):
    from django.db import transaction

    sent = []
    monkeypatch.setattr(tasks.ping_task, "apply_async", lambda *a, **k: sent.append((a, k)))
    with transaction.atomic():
        tasks.ping_task.delay_on_commit("x")
        assert sent == []
    assert len(sent) == 1
