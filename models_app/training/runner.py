"""Runs a training run of the human proxy on a gpu worker.

``execute_training_run`` snapshots the training data (``training.selectors``), trains (pure
code in ``models_app.proxy``), registers a candidate ``ModelVersion``, runs the promotion
gate against the promoted version on the same held-out human labels, and promotes on a
pass (``training.registry``).
"""

from __future__ import annotations

import copy
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deidplatform.errors import AppError
from models_app.faces.selectors import contexts
from models_app.proxy.metrics import (
    json_safe,
    paired_difference_intervals,
    reliability_diagram_png,
    version_report,
)

from . import registry
from .battery import battery_for_model, battery_reasons
from .claims import claim_run, fail_run, owned
from .models import ModelKind, TrainingRun
from .selectors import fixed_split, load_version_model, promoted_version, training_data
from .services import RUN_DEFAULTS


def mark_running(run_id: str, claim: uuid.UUID | None = None) -> TrainingRun | None:
    """Claim a queued proxy run for this attempt (``claims.claim_run``); a new attempt starts
    over, with an empty history."""
    return claim_run(run_id, ModelKind.HUMAN_PROXY, keep_history=False, claim=claim)


def _history_saver(run: TrainingRun):
    def on_epoch(record: dict) -> bool:
        """Store the epoch and beat; False (stop) once the run was cancelled or taken over."""
        run.history = [*run.history, json_safe(record)]  # jsonb has no NaN
        return bool(owned(run).update(history=run.history, heartbeat=timezone.now()))

    return on_epoch


def _evaluate(model, bank, table, judgments, png: bool) -> tuple[dict, bytes | None, dict]:
    """Held-out metrics, the reliability diagram (``png``) and the per-pair probabilities
    and log-odds (``{"probs": …, "logits": …}``)."""
    from models_app.proxy.train import evaluate_proxy

    metrics = evaluate_proxy(model, bank, table)
    probs = metrics.pop("probs")
    per_pair = {"probs": probs, "logits": metrics.pop("logits")}
    diagram = None
    human = [r for r in judgments if r[0] in probs]
    if human:
        # version_report draws the diagram against each pair's human score-A, to a path.
        with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
            report = version_report(probs, human, tmp.name if png else None)
            diagram = Path(tmp.name).read_bytes() if png else None
        metrics["human"] = {k: v for k, v in report.items() if k != "reliability"}
    elif png:
        diagram = reliability_diagram_png(list(probs.values()), table.targets())
    return metrics, diagram, per_pair


def execute_training_run(run_id: str) -> dict:
    """Train, register, gate and (on a pass) promote. Runs on a gpu worker."""
    # torch and the networks load on the worker only, not in every web process.
    from models_app.proxy import ProxyError
    from models_app.proxy.augment import DEFAULT_INVARIANCE_PAIRS, add_invariance_pairs
    from models_app.proxy.config import ProxyConfig
    from models_app.proxy.data import check_pairs
    from models_app.proxy.io import proxy_to_bytes
    from models_app.proxy.network import HumanProxy
    from models_app.proxy.train import TrainConfig, train_proxy

    if TrainingRun.objects.filter(pk=run_id, kind=ModelKind.GENERATOR).exists():
        # A generator run sent under the proxy's task name (the sweeper re-sends every kind
        # of run by one name): it runs as a generator, never as a proxy.
        from .generator_runner import execute_generator_run

        return execute_generator_run(run_id)
    run = mark_running(run_id)
    if run is None:
        return {"run": run_id, "skipped": True}
    claim = run.claim
    cfg = {**RUN_DEFAULTS, **run.config}
    try:
        data = training_data(
            natural_same=int(cfg["natural_same"]), natural_different=int(cfg["natural_different"]),
            seed=int(cfg["seed"]),
        )
        train_cfg = TrainConfig.from_dict({"seed": int(cfg["seed"]), **cfg["train"]})
        check_pairs(data.pairs, train_cfg.min_pairs)
        incumbent = promoted_version(ModelKind.HUMAN_PROXY)
        incumbent_model = load_version_model(incumbent) if incumbent else None
        init = None
        # Warm start continues the platform's architecture only: an incumbent of an older
        # one (e.g. an RGB appearance branch) is replaced by a fresh network.
        warm = bool(cfg["warm_start"]) and incumbent_model is not None and (
            incumbent_model.config == ProxyConfig()
        )
        if warm:
            # A copy: the cached instance is shared with scorers that freeze it.
            init = copy.deepcopy(incumbent_model).requires_grad_(True)
        model_config = init.config if init is not None else ProxyConfig()
        encoder = init if init is not None else HumanProxy(model_config)
        owned(run).update(heartbeat=timezone.now())  # the data is read: beat before encoding
        keys, ctx = contexts(data.images.values())
        bank = encoder.encode_images(ctx, keys)
        if not owned(run).update(heartbeat=timezone.now()):
            return {"run": str(run.pk), "skipped": True}  # cancelled or taken over meanwhile
        split = fixed_split(data.pairs, seed=int(cfg["seed"]))
        # Known-same pairs (image, invariance-set variant) for the training subjects: what
        # people ignore must not move score-A (models_app.proxy.augment).
        train_bank, train_pairs = add_invariance_pairs(
            encoder, bank, data.pairs, ctx, keys, split.train,
            int(cfg.get("invariance_pairs", DEFAULT_INVARIANCE_PAIRS)), seed=int(cfg["seed"]),
        )
        result = train_proxy(
            train_bank, train_pairs, train_cfg, split=split, init=init,
            model_config=model_config, on_epoch=_history_saver(run),
        )
    except (ProxyError, AppError, ValueError, KeyError) as exc:
        # Bad data or a corrupt promoted file: the run fails, the promoted version stays.
        fail_run(run, f"{type(exc).__name__}: {exc}")
        return {"run": str(run.pk), "status": "failed", "error": str(exc)}
    except Exception as exc:
        fail_run(run, f"{type(exc).__name__}: {exc}")
        raise
    if result.stop_reason == "cancelled":  # cancelled, or another attempt took over
        status = TrainingRun.objects.filter(pk=run.pk).values_list("status", flat=True).first()
        return {"run": str(run.pk), "status": status, "stop_reason": "cancelled"}
    owned(run).update(heartbeat=timezone.now())  # the gate evaluates: one more beat

    # The gate: candidate and incumbent on the same held-out (test-subject) pairs: the human
    # labels when they hold both answers (AUC needs both), else with the held-out natural
    # pairs added (people know those: LFW accuracy 99.2%), else natural pairs alone (prior).
    test = split.apply(data.pairs)["test"]
    human = test.select(lambda p: not p.natural)
    both = {t > 0.5 for t in human.targets()} == {True, False}
    if len(human) and both:
        held_out, gate_set = human, "human"
    elif len(human):
        held_out, gate_set = test, "human+natural"
    else:
        held_out, gate_set = test, "natural"
    if len(held_out) == 0:
        fail_run(run, "no held-out pairs: too few subjects to hold some out")
        return {"run": str(run.pk), "status": "failed", "error": "no held-out pairs"}
    cand_metrics, diagram, cand_p = _evaluate(
        result.model, bank, held_out, data.judgments, png=True
    )
    inc_metrics, intervals = None, None
    if incumbent_model is not None:
        inc_bank = bank if incumbent_model.config == result.model.config else (
            incumbent_model.encode_images(ctx, keys)
        )
        inc_metrics, _, inc_p = _evaluate(
            incumbent_model, inc_bank, held_out, data.judgments, png=False
        )
        if len(held_out) < settings.DEID_MIN_HELD_OUT_PAIRS:
            # On a few pairs a point difference is mostly which pairs happened to be held
            # out (a round holds out ~3 subjects): only a difference beyond chance rejects.
            ids = [q.pair_id or f"{q.a}|{q.b}" for q in held_out]  # evaluate_proxy's keys
            intervals = paired_difference_intervals(
                [cand_p["probs"][i] for i in ids], [inc_p["probs"][i] for i in ids],
                held_out.targets(), held_out.weights(), seed=int(cfg["seed"]),
                candidate_scores=[cand_p["logits"][i] for i in ids],
                reference_scores=[inc_p["logits"][i] for i in ids],
            )
    battery = battery_for_model(result.model)
    owned(run).update(heartbeat=timezone.now())
    decision = registry.gate_decision(
        cand_metrics, inc_metrics, float(cfg["gate_tolerance"]),
        battery_reasons(battery) if settings.DEID_BATTERY_GATE else None,
        intervals=intervals,
    )
    metrics = {
        "held_out": cand_metrics, "held_out_set": gate_set, "n_held_out": len(held_out),
        "validation": result.val_metrics.get("full"),
        "validation_appearance": result.val_metrics.get("appearance"),
        "incumbent_on_held_out": inc_metrics,
        "labels": data.n_labels, "simulated_labels": data.n_simulated_labels,
        "warm_start": warm,
        "invariance_pairs": len(train_pairs) - len(data.pairs),
    }
    # A tiny held-out set can show AUC 1.0 and mean nothing: say so beside the figures.
    if len(held_out) < settings.DEID_MIN_HELD_OUT_PAIRS:
        ci = cand_metrics.get("auc_ci95")
        metrics["warnings"] = [
            f"held-out set too small to mean much: {len(held_out)} pairs of {len(split.test)} "
            f"subjects (fewer than {settings.DEID_MIN_HELD_OUT_PAIRS}); AUC 95 % interval "
            + (f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "undefined")
        ]
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status != TrainingRun.Status.RUNNING or run.claim != claim:
            # Cancelled during the gate, or a later attempt owns it: register nothing.
            return {"run": str(run.pk), "status": run.status, "skipped": True}
        version = registry.register_version(
            kind=ModelKind.HUMAN_PROXY, weights=proxy_to_bytes(result.model),
            config={"proxy": result.model.config.to_dict(), "train": result.config,
                    "run": {k: v for k, v in cfg.items() if k != "train"}},
            metrics=json_safe(metrics), is_prior=bool(result.model.meta.prior), parent=incumbent,
            training_run=run, diagram_png=diagram,
            gate=json_safe({**decision.as_dict(), "warnings": metrics.get("warnings", [])}),
            battery=json_safe(battery) if battery else None,
        )
        if not decision.passed:
            version.status = version.Status.REJECTED
            version.save(update_fields=["status"])
        run.status = TrainingRun.Status.SUCCEEDED
        run.stop_reason = result.stop_reason
        run.labels_used = data.n_labels
        run.finished = timezone.now()
        run.data_snapshot = json_safe({
            "pairs": data.pairs.to_records(), "split": result.split.to_dict(),
            "n_pairs": result.n_pairs, "labels": data.n_labels, "gate_set": gate_set,
            "simulated_labels": data.n_simulated_labels,
        })
        run.save(update_fields=["status", "stop_reason", "labels_used", "finished", "data_snapshot"])
    if decision.passed and cfg["auto_promote"]:
        registry.promote(version)
    return {"run": str(run.pk), "status": run.status, "version": version.number,
            "gate": decision.passed, "stop_reason": result.stop_reason}
