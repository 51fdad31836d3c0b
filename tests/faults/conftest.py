"""Real processes for the fault suite: a private Redis server (so a test can take the broker
down and bring it back without touching anyone else's), web servers and Celery workers of
its own (so a test can kill -9 them), all on the test database and one media folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.conftest import _database_url
from tests.helpers import REPO, wait_for

# Short clocks for the suite: a silent job is stale after 4 s, an unsent row after 1 s.
FAULT_ENV = {
    "DEID_HEARTBEAT_STALE_S": "4",
    "DEID_DISPATCH_GRACE_S": "1",
    "DEID_LABELS_STALE_S": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A throw-away ``redis-server`` on its own port; ``stop()`` is a broker outage."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=10, interval=0.05, what="redis-server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class Proc:
    """A started process group and its log."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc, self.log_path = proc, log_path

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        """kill -9 the whole group: the worker and its pool child at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
            except ProcessLookupError:
                pass


class Cluster:
    """Processes sharing the test database, a media folder and the private broker."""

    def __init__(self, redis: RedisServer, media: Path, logs: Path, db_url: str) -> None:
        self.redis, self.media, self.logs, self.db_url = redis, media, logs, db_url
        self.procs: list[Proc] = []
        self._n = 0

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="deidplatform.settings_test", DATABASE_URL=self.db_url,
            CELERY_BROKER_URL=self.redis.url, CELERY_RESULT_BACKEND=self.redis.url,
            PRIVATE_MEDIA_ROOT=str(self.media), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
            **FAULT_ENV,
        )
        env.update(extra)
        return env

    def _spawn(self, argv: list[str], name: str, env: dict[str, str]) -> Proc:
        self._n += 1
        log_path = self.logs / f"{self._n:02d}-{name}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        p = Proc(proc, log_path)
        self.procs.append(p)
        return p

    def worker(self, **extra: str) -> Proc:
        """A prefork worker with one pool child (kill -9 takes both)."""
        p = self._spawn(
            [sys.executable, "-m", "celery", "-A", "deidplatform", "worker", "-Q", "gpu,cpu",
             "-P", "prefork", "-c", "1", "-l", "info", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"faults-{self._n}-{os.getpid()}@%h"],
            "worker", self.env(**extra),
        )

        def ready() -> bool:
            if p.proc.poll() is not None:
                pytest.fail(f"worker exited early:\n{p.text()}")
            return " ready." in p.text()

        wait_for(ready, timeout=90, what="a celery worker to start")
        return p

    def web(self, **extra: str) -> tuple[Proc, str]:
        port = free_port()
        p = self._spawn(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload",
             "--skip-checks"],
            "web", self.env(**extra),
        )

        def up() -> bool:
            if p.proc.poll() is not None:
                pytest.fail(f"web server exited early:\n{p.text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout=60, interval=0.2, what="the web server")
        return p, f"http://127.0.0.1:{port}"

    def sender(self) -> Celery:
        """A bare client of the private broker, routed like the platform's app: sends by
        name, like beat would."""
        from deidplatform.celery import app as platform

        app = Celery("faults", broker=self.redis.url, backend=self.redis.url,
                     set_as_current=False)
        app.conf.update({k: platform.conf[k] for k in (
            "task_queues", "task_default_queue", "task_routes", "task_serializer",
            "accept_content",
        )})
        return app

    def send(self, name: str, *args: object) -> None:
        """Send task ``name`` to the private broker (explicitly: CELERY_BROKER_URL in this
        process's environment would win over any app's configuration)."""
        app = self.sender()
        with app.connection_for_write(self.redis.url) as conn:
            app.send_task(name, args=list(args), connection=conn, ignore_result=True)

    def sweep(self) -> None:
        """One sweeper run on a worker (as beat sends it every minute)."""
        from deidplatform.celery import SWEEP_STALE_WORK

        self.send(SWEEP_STALE_WORK)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def cluster(django_db_setup, settings, tmp_path) -> Iterator[Cluster]:
    from django.db import connection

    redis = RedisServer(tmp_path)
    redis.start()
    media = tmp_path / "media"
    media.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    settings.MEDIA_ROOT = settings.PRIVATE_MEDIA_ROOT = media  # where the workers read
    c = Cluster(redis, media, logs, _database_url(connection.settings_dict))
    try:
        yield c
    finally:
        c.close()
        redis.stop()


def wait_until(probe, timeout: float, what: str, interval: float = 0.25):
    t0 = time.monotonic()
    value = wait_for(probe, timeout=timeout, interval=interval, what=what)
    return value, time.monotonic() - t0
