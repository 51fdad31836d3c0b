"""The one Celery app. Two queues: ``gpu`` runs networks, ``cpu`` runs everything else.

Routes are explicit so that a new task never lands on the wrong worker by accident; a
task with no route goes to ``cpu``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Queue

from .errors import AppError, error_code

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deidplatform.settings")

app = Celery("deidplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"

# Registered task names. They are wire names (messages in the broker, beat rows in the
# database), so they stay put when code moves. Services enqueue by these names with
# ``enqueue_on_commit``: a task module imports its services, so a service importing the task
# module back would close an import circle.
PING = "models_app.tasks.ping"
DEVICE_INFO = "models_app.tasks.device_info"
INGEST_FILE = "models_app.tasks.ingest_file"
TRAIN_PROXY = "models_app.tasks.train_proxy"
TRAIN_GENERATOR = "models_app.tasks.train_generator"
MAYBE_RETRAIN = "models_app.tasks.maybe_retrain"
RESCORE_OUTPUTS = "models_app.tasks.rescore_outputs"
RUN_DEID_JOB = "models_app.tasks.run_deid_job"
UPDATE_CAMPAIGN_LABELS = "ratings.tasks.update_campaign_labels"
RECLAIM_EXPIRED_HOLDS = "ratings.tasks.reclaim_expired_holds"
SWEEP_STALE_WORK = "models_app.tasks.sweep_stale_work"
ADVANCE_ROUNDS = "models_app.tasks.advance_rounds"
START_ROUND = "models_app.tasks.start_round"

# A request that would queue work while the broker is unreachable (one status everywhere).
BROKER_UNAVAILABLE = error_code("broker_unavailable", 503)

# Tasks that run a network go to the gpu queue; the rest to cpu.
TASK_ROUTES: dict[str, dict[str, str]] = {
    PING: {"queue": CPU_QUEUE},
    INGEST_FILE: {"queue": CPU_QUEUE},
    DEVICE_INFO: {"queue": GPU_QUEUE},
    TRAIN_PROXY: {"queue": GPU_QUEUE},
    TRAIN_GENERATOR: {"queue": GPU_QUEUE},
    RESCORE_OUTPUTS: {"queue": GPU_QUEUE},
    RUN_DEID_JOB: {"queue": GPU_QUEUE},
    MAYBE_RETRAIN: {"queue": CPU_QUEUE},
    UPDATE_CAMPAIGN_LABELS: {"queue": CPU_QUEUE},
    RECLAIM_EXPIRED_HOLDS: {"queue": CPU_QUEUE},
    SWEEP_STALE_WORK: {"queue": CPU_QUEUE},
    # Scores candidate pairs and builds reports with the proxy (a few hundred pairs at most),
    # and runs a dry run's simulated crowd: cpu, so it never waits behind the loop's jobs.
    ADVANCE_ROUNDS: {"queue": CPU_QUEUE},
    START_ROUND: {"queue": CPU_QUEUE},
}

app.conf.update(
    task_queues=(Queue(GPU_QUEUE), Queue(CPU_QUEUE)),
    task_default_queue=CPU_QUEUE,
    task_routes=TASK_ROUTES,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=7 * 24 * 3600,
    broker_connection_retry_on_startup=True,
    task_track_started=True,
)
app.autodiscover_tasks()


log = logging.getLogger(__name__)


def send_now(name: str, *args: Any, **kwargs: Any) -> bool:
    """Send task ``name`` at once, routed like ``task.delay`` would be; False (logged, never
    raised) when the broker refused it: the row stays ``queued`` and the sweeper
    (``SWEEP_STALE_WORK``) sends it again. Publish retries are bounded in settings
    (``CELERY_TASK_PUBLISH_RETRY_POLICY``), so a dead broker costs well under a second."""
    try:
        task = app.tasks.get(name)  # registered here: apply_async honours eager mode too
        if task is not None:
            task.apply_async(args=args, kwargs=kwargs)
        else:
            app.send_task(name, args=args, kwargs=kwargs)
    except Exception as exc:  # kombu, redis and socket errors alike: the commit stands
        log.warning("could not send %s%r (%s: %s); left for the sweeper", name, args,
                    type(exc).__name__, exc)
        _remember(False)
        return False
    return True


def enqueue_on_commit(
    name: str, *args: Any, on_sent: Callable[[], None] | None = None, **kwargs: Any
) -> None:
    """Send task ``name`` once the current transaction commits (at once outside one).

    A failed send never raises into the request whose data already committed; ``on_sent``
    runs only after a successful send (e.g. to stamp the row as dispatched)."""
    from django.db import transaction

    def send() -> None:
        if send_now(name, *args, **kwargs) and on_sent is not None:
            on_sent()

    transaction.on_commit(send)


# Broker reachability, cached: one connect per few seconds at most, not one per request.
_probe_lock = threading.Lock()
_probe: dict[str, float | bool] = {"at": float("-inf"), "ok": True}
PROBE_OK_TTL_S = 5.0  # a healthy broker is re-checked at most this often
PROBE_FAIL_TTL_S = 1.0  # a dead one is retried sooner, so recovery shows quickly


def _remember(ok: bool) -> None:
    with _probe_lock:
        _probe.update(at=time.monotonic(), ok=ok)


def clear_broker_probe() -> None:
    """Forget the cached reachability (tests; after a broker switch)."""
    with _probe_lock:
        _probe.update(at=float("-inf"), ok=True)


def broker_reachable() -> bool:
    """Whether the broker accepts a connection now (cached for a few seconds; a short
    connect timeout, no retries)."""
    if app.conf.task_always_eager:
        return True
    with _probe_lock:
        ttl = PROBE_OK_TTL_S if _probe["ok"] else PROBE_FAIL_TTL_S
        if time.monotonic() - float(_probe["at"]) < ttl:
            return bool(_probe["ok"])
    from django.conf import settings

    timeout = float(getattr(settings, "CELERY_BROKER_PROBE_TIMEOUT_S", 1.0))
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=timeout)
        ok = True
    except Exception as exc:
        log.warning("broker unreachable: %s", exc)
        ok = False
    _remember(ok)
    return ok


def require_broker() -> None:
    """Refuse (503 ``broker_unavailable``) before any row is stored when work could not be
    queued now; a send that still fails after commit is left to the sweeper."""
    if not broker_reachable():
        raise AppError(
            BROKER_UNAVAILABLE,
            "The task queue is unreachable; nothing was stored. Try again shortly.",
        )
