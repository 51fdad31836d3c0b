"""Recovery times (issue 12): how long work stays stuck after a fault, with real processes.

* ``worker_kill``: a de-identification job runs on a worker (prefork, one pool child); both
  are killed with SIGKILL after two iterations. A second, idle worker is running. Measured:
  kill → the job re-queued by the sweeper → resumed (its next iteration recorded by the new
  attempt) → done.
* ``broker_back``: the broker (a private ``redis-server``) is down while N jobs commit
  (their sends fail: rows ``queued``, never dispatched). The broker comes back. Measured:
  restart → every job delivered (claimed) → every job done (the queue drained).

The sweeper is sent every ``--sweep-every`` seconds (beat sends it every minute in
production) and a silent job is stale after ``--stale`` seconds (``DEID_HEARTBEAT_STALE_S``,
300 in production): production recovery is about stale + sweep period + the figures here.

Needs PostgreSQL (``DATABASE_URL``; a scratch database ``<name>_recovery`` is created and
dropped), ``redis-server`` on the PATH and the LFW data. Run from the repository root:
``python -m bench.recovery [--quick]``; prints one JSON line last.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    LFW_DIR,
    REPO,
    emit,
    free_port,
    log,
    machine,
    parse_args,
    redis_ping,
    wait,
)

SOURCE = LFW_DIR / "lfw-deepfunneled" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"


class Bench:
    """A scratch database, a private Redis and worker processes; the two measurements."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import dj_database_url

        base = os.environ.get("DATABASE_URL", "")
        if not base.startswith("postgres"):
            sys.exit("set DATABASE_URL to a PostgreSQL server (a scratch database is made)")
        cfg = dj_database_url.parse(base)
        self.dbname = f"{cfg['NAME']}_recovery"
        self.admin = base.rsplit("/", 1)[0] + "/postgres"
        self.db_url = base.rsplit("/", 1)[0] + "/" + self.dbname
        self.tmp, self.args = tmp, args
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []
        self.media = tmp / "media"
        self.media.mkdir()
        self.env = dict(
            os.environ, DJANGO_SETTINGS_MODULE="deidplatform.settings_test",
            DATABASE_URL=self.db_url, CELERY_BROKER_URL=self.redis_url,
            CELERY_RESULT_BACKEND=self.redis_url, PRIVATE_MEDIA_ROOT=str(self.media),
            DEID_HEARTBEAT_STALE_S=str(args.stale), DEID_DISPATCH_GRACE_S="0",
            PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
        )

    # --- processes -------------------------------------------------------------------------
    def create_db(self) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
            c.execute(f'CREATE DATABASE "{self.dbname}"')
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO,
                       env=self.env, check=True)

    def drop_db(self) -> None:
        import psycopg
        from django.db import connections

        connections.close_all()
        with psycopg.connect(self.admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def redis_start(self) -> None:
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait(self._redis_up, 10, "redis-server")

    def _redis_up(self) -> bool:
        return redis_ping(self.redis_port)

    def redis_stop(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    def worker(self, name: str) -> subprocess.Popen:
        log_path = self.tmp / f"{name}.log"
        with open(log_path, "w") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "deidplatform", "worker", "-Q", "gpu,cpu",
                 "-P", "prefork", "-c", "1", "-l", "info", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h"],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(p)
        wait(lambda: " ready." in log_path.read_text(errors="replace"), 120, f"worker {name}")
        return p

    @staticmethod
    def kill9(p: subprocess.Popen) -> None:
        os.killpg(p.pid, signal.SIGKILL)  # the worker and its pool child
        p.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.kill9(p)
        self.redis_stop()

    def send(self, name: str, *args: object) -> None:
        """By name to the private broker (explicit connection: CELERY_BROKER_URL in this
        process's environment would win over an app's configuration)."""
        from celery import Celery

        from deidplatform.celery import app as platform

        app = Celery("bench", broker=self.redis_url, set_as_current=False)
        app.conf.update({k: platform.conf[k] for k in (
            "task_queues", "task_default_queue", "task_routes", "task_serializer",
            "accept_content")})
        try:
            with app.connection_for_write(self.redis_url) as conn:
                app.send_task(name, args=list(args), connection=conn, ignore_result=True)
        except Exception:  # the broker is still down: the next sweep tries again
            pass

    def sweep(self) -> None:
        from deidplatform.celery import SWEEP_STALE_WORK

        now = time.monotonic()
        if now - getattr(self, "_last_sweep", 0.0) >= self.args.sweep_every:
            self._last_sweep = now
            self.send(SWEEP_STALE_WORK)

    # --- the two measurements ---------------------------------------------------------------
    def setup_data(self):
        from django.conf import settings

        settings.MEDIA_ROOT = settings.PRIVATE_MEDIA_ROOT = self.media
        import torch

        from models_app.faces.services import get_or_create_subject, ingest_image
        from models_app.models import ModelKind
        from models_app.proxy.config import ProxyMeta
        from models_app.proxy.io import proxy_to_bytes
        from models_app.proxy.network import HumanProxy
        from models_app.training import registry

        torch.manual_seed(0)  # an untrained proxy drives the loop: speed, not quality
        model = HumanProxy(meta=ProxyMeta(prior=True, description="bench"))
        proxy = registry.promote(registry.register_version(
            kind=ModelKind.HUMAN_PROXY, weights=proxy_to_bytes(model), config={}, metrics={},
            is_prior=True))
        src = ingest_image(SOURCE.read_bytes(), subject=get_or_create_subject("s1")).image
        return src, proxy

    def worker_kill(self, src, proxy) -> dict[str, float]:
        from deidplatform.celery import RUN_DEID_JOB
        from models_app.models import DeidJob

        job = DeidJob.objects.create(source=src, proxy_version=proxy, params={
            "max_iterations": 20, "convergence_window": 50, "eot": {"confirm_samples": 1}})
        workers = {name: self.worker(name) for name in ("w1", "w2")}
        self.send(RUN_DEID_JOB, str(job.pk))
        wait(lambda: DeidJob.objects.get(pk=job.pk).iterations_done >= 2, 180, "2 iterations")
        before = DeidJob.objects.get(pk=job.pk).iterations_done
        # The worker that took the job dies; the other one is idle and takes over.
        victim = next(n for n in workers if "run_deid_job[" in (self.tmp / f"{n}.log").read_text())
        a = workers.pop(victim)
        (spare,) = workers.values()
        self.kill9(a)
        t0 = time.monotonic()
        wait(lambda: DeidJob.objects.get(pk=job.pk).status == "queued"
             or DeidJob.objects.get(pk=job.pk).attempts >= 2, 120, "re-queue", each=self.sweep)
        requeued = time.monotonic() - t0
        wait(lambda: DeidJob.objects.filter(pk=job.pk, attempts=2,
                                             iterations_done__gt=before).exists(),
             180, "resume", each=self.sweep)
        resumed = time.monotonic() - t0
        wait(lambda: DeidJob.objects.get(pk=job.pk).status in ("succeeded", "finished"),
             180, "done", each=self.sweep)
        done = time.monotonic() - t0
        self.kill9(spare)
        self.procs.clear()
        return {"requeued_s": requeued, "resumed_s": resumed, "done_s": done}

    def broker_back(self, src, proxy, n: int) -> dict[str, float]:
        from deidplatform.celery import PING, broker_reachable, clear_broker_probe, send_now
        from models_app.models import DeidJob

        self.worker("drain")
        self.redis_stop()
        # What a web request pays while the broker is down: the probe (503 before any row),
        # and a send after commit that fails (bounded retries; ~20 s before issue 12).
        clear_broker_probe()
        t = time.monotonic()
        assert not broker_reachable()
        probe_s = time.monotonic() - t
        t = time.monotonic()
        assert not send_now(PING)
        failed_send_s = time.monotonic() - t
        clear_broker_probe()
        ids = [DeidJob.objects.create(source=src, proxy_version=proxy, params={
            "max_iterations": 2, "eot": {"confirm_samples": 1}, "seed": i}).pk
            for i in range(n)]  # as left by failed sends: queued, never dispatched
        time.sleep(1.0)
        self.redis_start()
        t0 = time.monotonic()
        jobs = DeidJob.objects.filter(pk__in=ids)
        wait(lambda: not jobs.filter(status="queued").exists(), 180, "delivery",
             each=self.sweep)
        delivered = time.monotonic() - t0
        wait(lambda: not jobs.exclude(status__in=("succeeded", "finished")).exists(), 300,
             "drain", each=self.sweep)
        drained = time.monotonic() - t0
        self.stop_all()
        return {"delivered_s": delivered, "drained_s": drained, "jobs": n,
                "dead_broker_probe_s": probe_s, "dead_broker_failed_send_s": failed_send_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=5, help="jobs left unsent during the outage")
    ap.add_argument("--stale", type=int, default=4, help="DEID_HEARTBEAT_STALE_S (s)")
    ap.add_argument("--sweep-every", type=float, default=1.0, help="sweeper period (s)")
    args = parse_args(ap, {"runs": 1, "jobs": 3})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop workers, drop the db
    if not SOURCE.exists():
        sys.exit(f"LFW not found at {SOURCE.parent} (../shared/data is absent)")
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(args, Path(tmp))
        os.environ.update({k: b.env[k] for k in (
            "DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND", "PRIVATE_MEDIA_ROOT", "DEID_HEARTBEAT_STALE_S")})
        log(f"scratch database {b.dbname}")
        b.create_db()
        import django

        django.setup()
        kills, backs = [], []
        try:
            b.redis_start()
            src, proxy = b.setup_data()
            for i in range(args.runs):
                kills.append(b.worker_kill(src, proxy))
                log(f"worker kill {i + 1}: {kills[-1]}")
                backs.append(b.broker_back(src, proxy, args.jobs))
                log(f"broker back {i + 1}: {backs[-1]}")
                b.redis_start()
        finally:
            b.stop_all()
            b.drop_db()

    def med(rows: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 2)

    emit({
        "bench": "recovery", "machine": machine(), "runs": args.runs,
        "settings": {"DEID_HEARTBEAT_STALE_S": args.stale, "sweep_every_s": args.sweep_every,
                     "DEID_DISPATCH_GRACE_S": 0, "jobs_during_outage": args.jobs},
        "worker_kill": {k: med(kills, k) for k in ("requeued_s", "resumed_s", "done_s")},
        "broker_back": {k: med(backs, k) for k in ("delivered_s", "drained_s")},
        "dead_broker": {k: round(statistics.median(r[k] for r in backs), 3)
                        for k in ("dead_broker_probe_s", "dead_broker_failed_send_s")},
    })


if __name__ == "__main__":
    main()
