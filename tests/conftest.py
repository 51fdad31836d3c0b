"""Shared fixtures: private media in a temp folder, real face files, a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DEID_SHARED_DATA", REPO.parent / "shared" / "data"))
LFW_DIR = SHARED_DATA / "lfw" / "lfw-deepfunneled"
ATT_DIR = SHARED_DATA / "att_faces"


def require_lfw() -> Path:
    if not LFW_DIR.is_dir():
        pytest.skip(f"LFW data not found at {LFW_DIR} (../shared/data is absent)")
    return LFW_DIR


@pytest.fixture
def lfw_dir() -> Path:
    return require_lfw()


@pytest.fixture
def face_jpeg(lfw_dir: Path) -> bytes:
    """One real LFW photo (JPEG bytes) with one clear face."""
    return (lfw_dir / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core box, more threads than idle cores
    stall at every op (thread hand-offs cost more than the arithmetic, up to 100x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _private_media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "private-media"
    settings.PRIVATE_MEDIA_ROOT = settings.MEDIA_ROOT
    return settings.MEDIA_ROOT


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
    client.force_login(user)
    client.user = user
    return client


def _database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "postgres"
    pw = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{pw}@{host}:{port}/{db['NAME']}"


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real ``celery worker`` process on the test database and the configured broker.

    Tests that use it must commit their data: mark them ``django_db(transaction=True)``.
    """
    from django.conf import settings
    from django.db import connection

    media = tmp_path_factory.mktemp("worker-media")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="deidplatform.settings_test",
        DATABASE_URL=_database_url(connection.settings_dict),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CELERY_RESULT_BACKEND=settings.CELERY_RESULT_BACKEND,
        PRIVATE_MEDIA_ROOT=str(media),
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path_factory.mktemp("worker-log") / "worker.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deidplatform", "worker", "-Q", "cpu,gpu",
         "-P", "solo", "-c", "1", "-l", "info", "--without-gossip", "--without-mingle",
         "-n", f"test-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        log.seek(0)
        if " ready." in log.read():
            break
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"celery worker exited early:\n{log.read()}")
        time.sleep(0.3)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail(f"celery worker did not start:\n{log.read()}")
    proc.media_root = media
    proc.log = log
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
