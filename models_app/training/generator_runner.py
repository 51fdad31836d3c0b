"""Runs a generator training run on a gpu worker (issue 16; claims 5-10, FIG. 5).

``execute_generator_run`` takes the usable source faces of the database (training subjects
and the registry's fixed held-out subjects), trains a ``models_app.generator`` network with
the promoted human proxy for score-A and the dlib ResNet port for formula A and score-B,
registers it as a ``ModelVersion`` of kind ``generator``, gates it and promotes it on a pass.

Progress: every epoch is appended to ``run.history`` (held-out score-A, score-B, success
rate and objective; training loss), the run beats, and the training state is saved as a
private file named in ``run.data_snapshot["checkpoint"]``. A worker killed mid-run leaves it
``running``; the redelivered task (``acks_late``, or the sweeper once the heartbeat is stale)
claims it again and resumes from that checkpoint on the same faces (their ids are in the
snapshot), so no finished epoch is trained twice.

Gate: the candidate and the promoted generator are scored on the same held-out faces with the
same proxy and CFRU; the candidate passes if its success rate (score-A ≤ τA and score-B ≥ τB,
one forward pass) is not below the promoted one's.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from deidplatform.errors import AppError
from models_app.faces.models import FaceImage
from models_app.faces.selectors import contexts
from models_app.generator import (
    GeneratorConfig,
    GeneratorTrainConfig,
    evaluate_generator,
    generator_to_bytes,
    train_generator,
)
from models_app.proxy.metrics import json_safe

from . import registry
from .claims import claim_run, fail_run, owned
from .models import ModelKind, TrainingRun
from .selectors import (
    faces_in_order,
    generator_faces,
    load_generator_version,
    load_version_model,
    promoted_version,
)

log = logging.getLogger(__name__)

# Defaults of a generator run; an operator's ``config`` overrides any of them.
GENERATOR_RUN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "max_faces": 0,  # training faces used (0: all)
    "max_held_out": 0,  # held-out faces used (0: all)
    "deid": {},  # job parameters (DeidConfig) it trains for: τA, τB, loss, EOT, parameterisation
    "generator": {},  # GeneratorConfig: input_size, width (the parameterisation comes from deid)
    "train": {},  # GeneratorTrainConfig: batch_size, lr, stop {max_epochs, max_images,
    # score_a_quantile (0.9; null: the held-out mean), ...}
    "auto_promote": True,
    "gate_tolerance": 0.0,
}


def validate_generator_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The full run config (defaults filled in); ValueError naming the key otherwise."""
    from models_app.deid.config import DeidConfig
    from models_app.deid.errors import DeidConfigError

    config = dict(config or {})
    unknown = sorted(set(config) - set(GENERATOR_RUN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown keys: {unknown}")
    cfg = {**GENERATOR_RUN_DEFAULTS, **config}
    try:
        deid = DeidConfig.from_dict(cfg["deid"])
        deid.validate()
    except DeidConfigError as exc:
        raise ValueError(f"deid.{exc.field}: {exc.message}") from None
    except TypeError as exc:
        raise ValueError(f"deid: {exc}") from None
    try:
        GeneratorConfig.for_deid(deid, **dict(cfg["generator"])).validate()
    except TypeError as exc:
        raise ValueError(f"generator: {exc}") from None
    GeneratorTrainConfig.from_dict({"seed": int(cfg["seed"]), **cfg["train"]})
    for key in ("max_faces", "max_held_out"):
        if not (isinstance(cfg[key], int) and cfg[key] >= 0):
            raise ValueError(f"{key}: must be an integer >= 0")
    return cfg


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if not k.startswith("per_face")}


def generator_gate(
    candidate: dict[str, Any], incumbent: dict[str, Any] | None, tolerance: float = 0.0
) -> dict[str, Any]:
    """The gate's decision: the candidate's held-out success rate is not below the promoted
    generator's (both measured on the same faces with the same scorers); with no promoted
    generator, a defined success rate passes."""
    rate = candidate["success_rate"]
    if incumbent is None:
        passed = rate == rate  # not NaN
        reasons = [] if passed else ["held-out success rate undefined"]
    else:
        passed = rate >= incumbent["success_rate"] - tolerance
        reasons = [] if passed else [
            f"held-out success rate {rate:.3f} < promoted generator's "
            f"{incumbent['success_rate']:.3f}"
        ]
    return {"passed": bool(passed), "reasons": reasons, "metric": "held_out_success_rate",
            "candidate": _summary(candidate),
            "incumbent": _summary(incumbent) if incumbent else None, "tolerance": tolerance}


def claim_generator_run(run_id: str, claim: uuid.UUID | None = None) -> TrainingRun | None:
    """Claim a generator run for this attempt (``claims.claim_run``). Unlike a proxy run, its
    history, snapshot and start time are kept: the attempt resumes from the last checkpoint."""
    return claim_run(run_id, ModelKind.GENERATOR, keep_history=True, claim=claim)


def _face_set(images: list[FaceImage], blend: str):
    """The faces' context crops and change masks (the loop's, for the job's blend)."""
    from models_app.deid.composite import change_mask
    from models_app.generator import FaceSet

    _, ctx = contexts(images)
    masks = [change_mask((i.height, i.width), i.box, i.landmarks, ctx.shape[1], blend=blend)
             for i in images]
    return FaceSet.from_arrays(ctx, masks)


def _load_checkpoint(run: TrainingRun):
    from models_app.generator import GeneratorTrainState

    name = (run.data_snapshot or {}).get("checkpoint")
    if not name:
        return None
    try:
        with default_storage.open(name, "rb") as fh:
            return GeneratorTrainState.from_bytes(fh.read())
    except (OSError, ValueError) as exc:
        log.warning("generator run %s: unreadable checkpoint (%s), starting over", run.pk, exc)
        return None


def _delete_checkpoint(snapshot: dict) -> None:
    name = snapshot.pop("checkpoint", None)
    if name:
        default_storage.delete(name)


def execute_generator_run(run_id: str) -> dict:
    """Train (or resume), register, gate and (on a pass) promote a generator."""
    from models_app.deid.score_a import HumanProxyScorer
    from models_app.device import get_device
    from models_app.vision.dlib_resnet import get_dlib_resnet

    run = claim_generator_run(run_id)
    if run is None:
        return {"run": run_id, "skipped": True}
    claim = run.claim
    try:
        cfg = validate_generator_config(run.config)
        from models_app.deid.config import DeidConfig

        deid = DeidConfig.from_dict(cfg["deid"])
        gcfg = GeneratorConfig.for_deid(deid, **dict(cfg["generator"]))
        tc = GeneratorTrainConfig.from_dict({"seed": int(cfg["seed"]), **cfg["train"]})
        proxy_version = promoted_version(ModelKind.HUMAN_PROXY)
        if proxy_version is None:
            return fail_run(run, "no promoted human proxy: score-A cannot be computed")
        snapshot = dict(run.data_snapshot or {})
        resume = _load_checkpoint(run)
        if resume is not None and snapshot.get("proxy_version") == str(proxy_version.pk):
            train_imgs = faces_in_order(snapshot["train_faces"])
            held_imgs = faces_in_order(snapshot["held_out_faces"])
            if len(train_imgs) != len(snapshot["train_faces"]) or len(held_imgs) != len(
                snapshot["held_out_faces"]
            ):
                resume = None  # faces were erased meanwhile: the checkpoint no longer fits
        else:
            resume = None
        if resume is None:
            _delete_checkpoint(snapshot)
            train_imgs, held_imgs = generator_faces()
            if cfg["max_faces"]:
                train_imgs = train_imgs[: cfg["max_faces"]]
            if cfg["max_held_out"]:
                held_imgs = held_imgs[: cfg["max_held_out"]]
            snapshot = {
                "proxy_version": str(proxy_version.pk), "proxy_number": proxy_version.number,
                "train_faces": [str(i.pk) for i in train_imgs],
                "held_out_faces": [str(i.pk) for i in held_imgs],
                "train_subjects": len({i.subject_id for i in train_imgs}),
                "held_out_subjects": len({i.subject_id for i in held_imgs}),
            }
            TrainingRun.objects.filter(pk=run.pk).update(data_snapshot=snapshot, history=[])
            run.history = []
        if not train_imgs or not held_imgs:
            return fail_run(run, "too few faces: training and held-out subjects both need faces "
                                 f"(training {len(train_imgs)}, held-out {len(held_imgs)})")
        if not owned(run).update(heartbeat=timezone.now()):
            return {"run": str(run.pk), "skipped": True}
        train_set, held_set = _face_set(train_imgs, deid.blend), _face_set(held_imgs, deid.blend)
        proxy = HumanProxyScorer(load_version_model(proxy_version))
        device = get_device()
        owned(run).update(heartbeat=timezone.now())

        def on_epoch(record: dict, checkpoint) -> bool:
            """Store the epoch, its checkpoint and a beat; False once cancelled or taken."""
            state = checkpoint().to_bytes()
            old = snapshot.get("checkpoint")
            name = default_storage.save(f"checkpoints/generator-{run.pk.hex}.state",
                                        ContentFile(state))
            snapshot["checkpoint"] = name
            run.history = [*run.history, json_safe(record)]
            ok = bool(owned(run).update(history=run.history, data_snapshot=snapshot,
                                        heartbeat=timezone.now()))
            if old and old != name:
                default_storage.delete(old)
            return ok

        def on_batch(_images: int) -> bool:
            return bool(owned(run).update(heartbeat=timezone.now()))

        result = train_generator(
            train_set, held_set, proxy, deid, tc, gcfg, on_epoch=on_epoch, on_batch=on_batch,
            resume=resume, device=device,
        )
        if result.stop_reason == "cancelled":
            status = TrainingRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()
            return {"run": str(run.pk), "status": status, "stop_reason": "cancelled"}
        # The gate: candidate and promoted generator on the same held-out faces, same scorers.
        net = get_dlib_resnet(device)
        cand = evaluate_generator(result.model, held_set, proxy, net, deid, device=device)
        incumbent = promoted_version(ModelKind.GENERATOR)
        inc = None
        if incumbent is not None:
            inc_model = load_generator_version(incumbent)
            # Another parameterisation's generator is scored under its own (the job config
            # with its plug), on the same faces with the same scorers.
            from models_app.generator.apply import config_for

            inc = evaluate_generator(inc_model, held_set, proxy, net,
                                     config_for(inc_model, deid), device=device)
        owned(run).update(heartbeat=timezone.now())
    except (AppError, ValueError, KeyError) as exc:
        return fail_run(run, f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        fail_run(run, f"{type(exc).__name__}: {exc}")
        raise

    gate = {**generator_gate(cand, inc, float(cfg["gate_tolerance"])),
            "incumbent_version": incumbent.number if incumbent else None}
    passed = gate["passed"]
    metrics = {
        "held_out": _summary(cand), "held_out_success_rate": cand["success_rate"],
        "n_held_out": cand["n"], "n_train": len(train_imgs),
        "stop_reason": result.stop_reason, "stop_detail": result.stop_detail,
        "best_epoch": result.best_epoch, "epochs": result.epochs, "images": result.images,
        "proxy_version": proxy_version.number, "proxy_is_prior": proxy_version.is_prior,
        "simulated_labels": (proxy_version.metrics or {}).get("simulated_labels", 0),
        "seconds_last_attempt": round(result.seconds, 1), "resumed_from": result.resumed_from,
    }
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status != TrainingRun.Status.RUNNING or run.claim != claim:
            return {"run": str(run.pk), "status": run.status, "skipped": True}
        version = registry.register_version(
            kind=ModelKind.GENERATOR,
            weights=generator_to_bytes(result.model, {"run": str(run.pk)}),
            config={"generator": gcfg.to_dict(), "deid": deid.to_dict(), "train": tc.to_dict(),
                    "run": {k: v for k, v in cfg.items() if k not in ("deid", "train")}},
            metrics=json_safe(metrics), parent=incumbent, training_run=run,
            gate=json_safe(gate),
        )
        if not passed:
            version.status = version.Status.REJECTED
            version.save(update_fields=["status"])
        snapshot = dict(run.data_snapshot or {})
        _delete_checkpoint(snapshot)
        run.data_snapshot = snapshot
        run.status = TrainingRun.Status.SUCCEEDED
        run.stop_reason = result.stop_reason
        run.finished = timezone.now()
        run.save(update_fields=["status", "stop_reason", "finished", "data_snapshot"])
    if passed and cfg["auto_promote"]:
        registry.promote(version)
    return {"run": str(run.pk), "status": run.status, "version": version.number,
            "gate": passed, "stop_reason": result.stop_reason}
