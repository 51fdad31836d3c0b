"""The dashboard's actions: each calls the platform's own service and, once it succeeded,
writes an audit row (who, what, which record by opaque id, when; never biometric data).

A refused action (an ``AppError`` from the service) is not audited: nothing changed."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from models_app.jobs import services as job_services
from models_app.jobs.models import DeidJob
from models_app.rounds import services as round_services
from models_app.rounds.models import Round
from models_app.training import registry
from models_app.training.models import ModelKind, ModelVersion
from ratings import services as rating_services
from ratings.models import Rater

from .models import AuditLog

Action = AuditLog.Action


def audit(actor: AbstractBaseUser, action: str, target_type: str, target_id: Any,
          **detail: Any) -> AuditLog:
    return AuditLog.objects.create(
        actor=actor, actor_name=actor.get_username(), action=action, target_type=target_type,
        target_id=str(target_id), detail=detail,
    )


def promote_version(actor: AbstractBaseUser, version: ModelVersion, *, force: bool = False
                    ) -> ModelVersion:
    before = ModelVersion.objects.filter(kind=version.kind, status=ModelVersion.Status.PROMOTED
                                         ).values_list("number", flat=True).first()
    version = registry.promote(version, force=force)
    audit(actor, Action.PROMOTE, "model_version", version.pk, number=version.number,
          kind=version.kind, previous=before, force=force)
    return version


def rollback_proxy(actor: AbstractBaseUser, kind: str = ModelKind.HUMAN_PROXY) -> ModelVersion:
    before = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.PROMOTED
                                         ).values_list("number", flat=True).first()
    version = registry.rollback(kind)
    audit(actor, Action.ROLLBACK, "model_version", version.pk, number=version.number, kind=kind,
          previous=before)
    return version


def block_rater(actor: AbstractBaseUser, rater: Rater) -> Rater:
    rater = rating_services.block_rater(rater.pk, "operator")
    audit(actor, Action.BLOCK, "rater", rater.pk, campaign=rater.campaign_id)
    return rater


def unblock_rater(actor: AbstractBaseUser, rater: Rater) -> Rater:
    rater = rating_services.unblock_rater(rater.pk)
    audit(actor, Action.UNBLOCK, "rater", rater.pk, campaign=rater.campaign_id)
    return rater


def start_round(actor: AbstractBaseUser, *, series: str | None, config: dict[str, Any]
                ) -> Round:
    rnd = round_services.start_round(series=series or None, config=config)
    audit(actor, Action.START_ROUND, "round", rnd.pk, series=rnd.series, number=rnd.number,
          faces=rnd.config.get("faces"))
    return rnd


def cancel_job(actor: AbstractBaseUser, job: DeidJob) -> DeidJob:
    job = job_services.cancel_job(job)
    audit(actor, Action.CANCEL_JOB, "deid_job", job.pk)
    return job
