"""Queue depths and live workers, asked of the broker and the workers with short timeouts.

Any failure (broker down, no worker answering in time) reads as ``None``: the page shows
"unknown" rather than hanging or failing. Answers are cached for a few seconds per process,
so polling pages cost one probe per interval, not one per request."""

from __future__ import annotations

import threading
import time
from typing import Any

from kombu.exceptions import ChannelError

from deidplatform.celery import CPU_QUEUE, GPU_QUEUE, app

QUEUES = (GPU_QUEUE, CPU_QUEUE)
CACHE_S = 5.0
_lock = threading.Lock()
_cache: dict[str, Any] = {"at": float("-inf"), "value": None}


def queue_depths(celery_app: Any = app, timeout: float = 1.0) -> dict[str, int | None]:
    """Messages waiting in each queue (None: the broker did not answer)."""
    out: dict[str, int | None] = dict.fromkeys(QUEUES)
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=timeout)
            channel = conn.default_channel
            for name in QUEUES:
                try:
                    out[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:  # a queue no worker ever declared: nothing waits in it
                    out[name] = 0
    except Exception:
        return dict.fromkeys(QUEUES)
    return out


def workers(celery_app: Any = app, timeout: float = 0.5) -> dict[str, Any] | None:
    """Workers that answered, with their running tasks per queue (None: nobody answered,
    or the broker is down: alive workers are then unknown, not zero)."""
    try:
        with celery_app.connection_for_write() as conn:
            # Connect once, without kombu's default retries (seconds against a dead broker).
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=timeout)
            active = celery_app.control.inspect(timeout=timeout, connection=conn).active()
    except Exception:
        return None
    if not active:
        return None
    running = dict.fromkeys(QUEUES, 0)
    for tasks in active.values():
        for task in tasks or []:
            queue = (task.get("delivery_info") or {}).get("routing_key") or CPU_QUEUE
            running[queue] = running.get(queue, 0) + 1
    return {"alive": sorted(active), "running": running}


def celery_status(*, refresh: bool = False) -> dict[str, Any]:
    """Queue depths and workers, cached for ``CACHE_S`` seconds."""
    with _lock:
        if not refresh and time.monotonic() - _cache["at"] < CACHE_S:
            return _cache["value"]
    queues = queue_depths(app)
    broker_up = any(v is not None for v in queues.values())
    value = {"queues": queues, "workers": workers(app) if broker_up else None}
    with _lock:
        _cache.update(at=time.monotonic(), value=value)
    return value


def clear_cache() -> None:
    with _lock:
        _cache.update(at=float("-inf"), value=None)
