"""Celery tasks of the jobs domain: thin wrappers over the runner and re-scoring."""

from __future__ import annotations

from celery import shared_task

from deidplatform.celery import RESCORE_OUTPUTS, RUN_DEID_JOB

from .rescoring import rescore_outputs
from .runner import execute_deid_job


@shared_task(name=RUN_DEID_JOB, bind=True, acks_late=True)
def run_deid_job_task(self, job_id: str) -> dict:
    return execute_deid_job(job_id)


@shared_task(name=RESCORE_OUTPUTS)
def rescore_outputs_task(version_id: str) -> dict:
    return rescore_outputs(version_id)
