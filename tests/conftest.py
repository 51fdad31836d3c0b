"""Shared fixtures: private media in a temp folder, real face files, a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import LFW_DIR, REPO, SHARED_DATA, require_lfw, wait_for  # noqa: F401


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


@pytest.fixture(autouse=True, scope="session")
def _no_media_handler():
    """Any live server (browser tests, the schema test) wraps the site in a MEDIA_URL file handler; MEDIA_URL is None here
    (face files have no URL), which crashes that handler. It must never serve anyway."""
    from django.test import testcases

    original = testcases._MediaFilesHandler._should_handle
    testcases._MediaFilesHandler._should_handle = lambda self, path: False
    yield
    testcases._MediaFilesHandler._should_handle = original


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Process-level caches start empty in every test, so no test sees another's state (a
    loaded proxy version keyed by a reused id, a stale campaign lookup)."""
    from models_app.training.selectors import clear_model_cache
    from ratings.hotpath import clear_caches
    from ratings.services.assignment import clear_reclaim_clock

    resets = (clear_model_cache, clear_caches, clear_reclaim_clock)
    for reset in resets:
        reset()
    yield
    for reset in resets:
        reset()


@pytest.fixture(autouse=True)
def _settled_label_updates(request):
    """Tests on a real (transactional) database end with a TRUNCATE. A label update that
    their judgments queued may be running on the session's worker right then, and the two
    deadlock: let it finish first (tests/ratings/factories.settle_label_updates)."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or any(
        f in request.fixturenames for f in ("transactional_db", "live_server"))
    if not transactional:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up first, so torn down after this
    yield
    from ratings.models import Campaign
    from tests.ratings.factories import settle_label_updates

    for campaign in Campaign.objects.all():  # pending, or recomputing right now
        settle_label_updates(campaign)


@pytest.fixture(autouse=True)
def _private_media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "private-media"
    settings.PRIVATE_MEDIA_ROOT = settings.MEDIA_ROOT
    return settings.MEDIA_ROOT


def staff_user(django_user_model, username: str, role: str | None):
    """A staff account in ``role`` (deidplatform.permissions; None: staff with no role).
    The roles are ensured first: a transactional test's flush drops the migration's groups."""
    from django.contrib.auth.models import Group

    from deidplatform.permissions import ensure_roles

    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    if role is not None:
        ensure_roles()
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def staff_client(client, django_user_model):
    """Staff in the operator role (is_staff alone opens nothing: issue 12)."""
    from deidplatform.permissions import OPERATOR

    user = staff_user(django_user_model, "operator", OPERATOR)
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
        # Worker tests train 2-3 epoch proxies on a dozen subjects, whose perceptual battery
        # passes or fails by chance; the battery gate is tested in-process (test_battery.py).
        DEID_BATTERY_GATE="0",
    )
    log = open(tmp_path_factory.mktemp("worker-log") / "worker.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "deidplatform", "worker", "-Q", "cpu,gpu",
         "-P", "solo", "-c", "1", "-l", "info", "--without-gossip", "--without-mingle",
         "-n", f"test-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def ready() -> bool:
        log.seek(0)
        text = log.read()
        if proc.poll() is not None:
            pytest.fail(f"celery worker exited early:\n{text}")
        return " ready." in text

    try:
        wait_for(ready, timeout=90, what="the celery worker to start")
    except BaseException:
        proc.kill()
        log.seek(0)
        print(log.read())
        raise
    proc.media_root = media
    proc.log = log
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
