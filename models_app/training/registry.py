"""The model registry: register versions, gate and promote them, roll back.

Services (writes) for ``ModelVersion``; its reads are in ``training.selectors``. A
promotion is announced with the ``model_promoted`` signal once it commits; the registry
knows nothing of who listens (the jobs domain re-scores outputs). Exactly one version per kind is promoted at a time
(a partial unique constraint backs this up); every change of the promoted version takes
the kind's rows under ``lock_versions`` so two promotions never interleave.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from deidplatform.errors import AppError
from models_app.proxy.metrics import not_worse

from . import errors
from .models import ModelKind, ModelVersion, TrainingRun
from .signals import model_promoted

log = logging.getLogger(__name__)

# Metrics the gate compares, and which direction is better.
GATE_METRICS: dict[str, str] = {"auc": "higher", "brier": "lower"}


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str]
    candidate: dict[str, float]
    incumbent: dict[str, float] | None
    tolerance: float
    # Paired bootstrap intervals of candidate − incumbent, when the held-out set was too
    # small for the point rule (None: the point rule decided).
    intervals: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "tolerance": self.tolerance,
            "metrics": GATE_METRICS,
            "rule": "point" if self.intervals is None else "interval",
            "intervals": self.intervals,
        }


def gate_decision(
    candidate: dict[str, float],
    incumbent: dict[str, float] | None,
    tolerance: float = 0.0,
    battery_reasons: list[str] | None = None,
    intervals: dict[str, Any] | None = None,
) -> GateDecision:
    """Not worse than the incumbent on held-out human labels (AUC and Brier, both measured
    on the same held-out pairs). With no incumbent, a candidate with finite metrics passes.
    ``battery_reasons``: the perceptual battery's broken invariance items (each fails it).
    ``intervals``: paired bootstrap intervals of the differences, given when the held-out
    set is small; then only a difference beyond chance rejects (``metrics.not_worse``)."""
    if incumbent is None:
        ok, reasons = not_worse(candidate, candidate)  # only checks the metrics are defined
        intervals = None
    else:
        ok, reasons = not_worse(candidate, incumbent, tolerance, tolerance, intervals)
    if battery_reasons:
        ok, reasons = False, [*reasons, *battery_reasons]
    pick = lambda m: {k: m.get(k) for k in GATE_METRICS}  # noqa: E731
    return GateDecision(
        passed=ok, reasons=reasons, candidate=pick(candidate),
        incumbent=pick(incumbent) if incumbent else None, tolerance=tolerance,
        intervals=intervals,
    )


def lock_versions(kind: str) -> list[ModelVersion]:
    """Row locks on every version of a kind, always taken in ``number`` order."""
    return list(ModelVersion.objects.select_for_update().filter(kind=kind).order_by("number"))


def register_version(
    *,
    kind: str,
    weights: bytes,
    config: dict[str, Any],
    metrics: dict[str, Any],
    is_prior: bool = False,
    parent: ModelVersion | None = None,
    training_run: TrainingRun | None = None,
    diagram_png: bytes | None = None,
    gate: dict[str, Any] | None = None,
    battery: dict[str, Any] | None = None,
) -> ModelVersion:
    """Store a new candidate version (file first, then the row; a failure leaves neither)."""
    version = ModelVersion(
        kind=kind, config=config, metrics=metrics, is_prior=is_prior, parent=parent,
        training_run=training_run, sha256=hashlib.sha256(weights).hexdigest(), gate=gate or {},
        battery=battery or {},
    )
    saved: list[str] = []
    try:
        version.file.save("weights.safetensors", ContentFile(weights), save=False)
        saved.append(version.file.name)
        if diagram_png:
            version.reliability_diagram.save("reliability.png", ContentFile(diagram_png), save=False)
            saved.append(version.reliability_diagram.name)
        with transaction.atomic():
            lock_versions(kind)
            top = ModelVersion.objects.filter(kind=kind).aggregate(m=Max("number"))["m"] or 0
            version.number = top + 1
            version.save(force_insert=True)
    except BaseException:
        for name in saved:
            version.file.storage.delete(name)
        raise
    return version


def promote(version: ModelVersion, *, force: bool = False) -> ModelVersion:
    """Make ``version`` the promoted one of its kind; the previous one is retired.

    A version that failed its gate is refused unless ``force`` (an operator's explicit
    override). Affected de-identification outputs are re-scored after the commit.
    """
    with transaction.atomic():
        rows = {v.pk: v for v in lock_versions(version.kind)}
        version = rows[version.pk]
        if version.status == ModelVersion.Status.PROMOTED:
            return version
        if version.status == ModelVersion.Status.REJECTED and not force:
            raise AppError(
                errors.FAILED_GATE,
                f"v{version.number} failed its promotion gate: "
                + "; ".join(version.gate.get("reasons", [])),
            )
        _make_promoted(rows.values(), version)
    log.info("promoted %s", version)
    return version


def rollback(kind: str = ModelKind.HUMAN_PROXY) -> ModelVersion:
    """Put back the version that was promoted before the current one."""
    with transaction.atomic():
        rows = lock_versions(kind)
        current = next((v for v in rows if v.status == ModelVersion.Status.PROMOTED), None)
        if current is None:
            raise AppError(errors.NOTHING_PROMOTED, "No version of this kind is promoted.")
        earlier = [
            v for v in rows
            if v.pk != current.pk and v.promoted_at is not None
            and v.status == ModelVersion.Status.RETIRED and v.promoted_at < current.promoted_at
        ]
        if not earlier:
            raise AppError(errors.NO_PREVIOUS, "No earlier promoted version to roll back to.")
        target = max(earlier, key=lambda v: v.promoted_at)
        _make_promoted(rows, target)
    log.info("rolled back to %s", target)
    return target


def _make_promoted(locked: Iterable[ModelVersion], target: ModelVersion) -> None:
    """Retire the promoted one, promote ``target``; the caller holds the kind's locks."""
    for other in locked:
        if other.status == ModelVersion.Status.PROMOTED and other.pk != target.pk:
            other.status = ModelVersion.Status.RETIRED
            other.save(update_fields=["status"])
    target.status = ModelVersion.Status.PROMOTED
    target.promoted_at = timezone.now()
    target.save(update_fields=["status", "promoted_at"])
    _after_promotion(target)


def _after_promotion(version: ModelVersion) -> None:
    transaction.on_commit(
        lambda: model_promoted.send(sender=ModelVersion, version=version)
    )
