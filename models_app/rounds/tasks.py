"""Celery tasks of the rounds domain: thin wrappers over the services."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from deidplatform.celery import ADVANCE_ROUNDS, START_ROUND

from .services import advance_all, start_round


@shared_task(name=ADVANCE_ROUNDS)
def advance_rounds_task() -> dict:
    """Every minute (beat): every running round moves on as far as it can."""
    return advance_all()


@shared_task(name=START_ROUND)
def start_round_task(series: str | None = None, config: dict[str, Any] | None = None) -> dict:
    """Schedulable (admin → Periodic tasks, kwargs {"series": ..., "config": {...}}): start
    the next round of a series on new subjects; the beat task advances it."""
    rnd = start_round(series=series, config=config)
    return {"round": str(rnd.pk), "series": rnd.series, "number": rnd.number}
