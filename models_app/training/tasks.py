"""Celery tasks of the training domain: thin wrappers over the runner and services."""

from __future__ import annotations

from celery import shared_task

from deidplatform.celery import MAYBE_RETRAIN, TRAIN_GENERATOR, TRAIN_PROXY

from .generator_runner import execute_generator_run
from .runner import execute_training_run
from .services import maybe_retrain


@shared_task(name=TRAIN_PROXY, bind=True, acks_late=True)
def train_proxy_task(self, run_id: str) -> dict:
    return execute_training_run(run_id)


@shared_task(name=TRAIN_GENERATOR, bind=True, acks_late=True)
def train_generator_task(self, run_id: str) -> dict:
    return execute_generator_run(run_id)


@shared_task(name=MAYBE_RETRAIN)
def maybe_retrain_task(scheduled: bool = False) -> dict:
    run = maybe_retrain(scheduled=scheduled)
    return {"started": str(run.id) if run else None}
