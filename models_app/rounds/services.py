"""Rounds of the closed loop: start one, advance it stage by stage, re-run a stage (writes).

Flow of one round (``advance``; each stage is idempotent and says whether it is done):

1. ``jobs``: a batch of de-identification jobs over the face set, with the promoted proxy
   (``proxy_before``) and a ladder; done when none is queued or running.
2. ``campaign``: a campaign (simulated crowd allowed only for a dry run) whose deid pairs
   are each job's ladder rungs and final output against the source, chosen and ordered by
   expected information under the proxies (``models_app.proxy.sampling``) or uniformly,
   plus gold pairs (jittered copies; different subjects) and attention checks; then active.
3. ``judgments``: people judge through the rater pages; a dry run's simulated crowd rates
   over HTTP here. Done when every deid pair has k counted judgments, when the configured
   wait has passed, or when the simulated crowd has finished.
4. ``labels``: Dawid–Skene labels now; the campaign closes.
5. ``training``: a warm-started training run on every label plus natural pairs; the run
   gates the candidate and promotes it on a pass. Done when the run ends.
6. ``report``: the round report (``rounds.report``): JSON and a PNG plot.
Then ``done``; with ``rounds_left`` > 0 the next round of the series starts on new subjects.

Who advances: whoever holds the round's lease (``run_rounds`` in-process, the beat task
``advance_rounds`` every minute, an operator's stage trigger). A killed advancer's lease
lapses and the next one resumes at the stage the database shows.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from deidplatform.errors import INVALID, AppError
from models_app.jobs.models import DeidJob
from models_app.jobs.params import validated_params
from models_app.jobs.services import create_batch
from models_app.training.models import ModelKind, ModelVersion, TrainingRun
from models_app.training.selectors import promoted_version
from models_app.training.services import RUN_DEFAULTS, request_training_run
from ratings.models import Campaign, Pair
from ratings.services import create_pairs, recompute_labels

from . import errors, selectors
from .models import Round

log = logging.getLogger(__name__)

Stage = Round.Stage

# A round's settings; run_rounds, the API and the schedule override any of them.
ROUND_DEFAULTS: dict[str, Any] = {
    "faces": 30,  # source faces per round, one per subject, subjects new to the series
    "seed": 0,
    "job_params": {},  # DeidConfig overrides (the ladder is on by default)
    "sampling": "active",  # "active" (expected information) or "uniform"
    "max_pairs": 0,  # cap on deid pairs (0: every candidate); final outputs always go in
    "gold_same": 6,
    "gold_different": 6,
    "attention": 3,
    "campaign": {  # ratings.Campaign fields of the round's campaign
        "judgments_per_pair": 3, "qualification_size": 4, "gold_rate": 0.1,
        "attention_rate": 0.05, "pass_mark": 0.75, "min_response_ms": 700,
        "completion_url": "", "external_study_id": "",
    },
    "judgments_wait_s": 0,  # 0: wait until every deid pair has k judgments
    "simulate": None,  # dry run: {"observer", "raters", "mix", "base_url", "time_scale", ...}
    "training": {"natural_same": 1000, "natural_different": 1000},  # TrainingRun config
    "rounds_left": 0,  # further rounds of the series to start when this one is done
}

SIMULATE_DEFAULTS: dict[str, Any] = {
    "observer": "external_features", "raters": 20,
    "mix": "careful=0.6,noisy=0.2,same_biased=0.1,spammer=0.1",
    "base_url": "http://127.0.0.1:8000", "time_scale": 0.0, "max_seconds": 1800.0,
    "concurrency": 8, "patience_s": 10.0, "seed": 0,
}

_CAMPAIGN_FIELDS = set(ROUND_DEFAULTS["campaign"]) | {"hold_timeout_s", "rater_quota", "completion_code",
                                                      "require_signed_links", "instructions",
                                                      "consent_text", "attention_failures_allowed",
                                                      "min_work_pairs", "rater_image",
                                                      "screenout_code", "return_url"}

CONSENT = (
    "You will see pairs of face photos, some of them altered, and say whether they show the "
    "same person. Your answers are stored without your name and used to train software that "
    "protects people's privacy in photos. You can stop at any time."
)
INSTRUCTIONS = (
    "Look at both photos and answer: is this the same person? Some photos were altered on "
    "purpose. Answer by the person, not by the picture's colours or quality."
)


def _bad(field: str, reason: str) -> AppError:
    return AppError(INVALID, reason, field=field)


def validated_config(data: dict[str, Any] | None) -> dict[str, Any]:
    """The full round settings (defaults filled in); ``invalid`` naming the field."""
    if data is not None and not isinstance(data, dict):
        raise _bad("config", "config must be a JSON object.")
    data = dict(data or {})
    unknown = set(data) - set(ROUND_DEFAULTS)
    if unknown:
        raise _bad(f"config.{sorted(unknown)[0]}", "unknown setting")
    cfg = {**ROUND_DEFAULTS, **data}
    for key in ("faces", "seed", "max_pairs", "gold_same", "gold_different", "attention",
                "judgments_wait_s", "rounds_left"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 0:
            raise _bad(f"config.{key}", "must be an integer >= 0")
    if cfg["faces"] < 1:
        raise _bad("config.faces", "must be at least 1")
    if cfg["sampling"] not in ("active", "uniform"):
        raise _bad("config.sampling", "must be 'active' or 'uniform'")
    try:
        cfg["job_params"] = validated_params(cfg["job_params"])
    except AppError as exc:  # "params.tau_a" → "config.job_params.tau_a"
        raise _bad(f"config.job_{exc.field}", exc.detail) from None
    campaign = {**ROUND_DEFAULTS["campaign"], **(data.get("campaign") or {})}
    bad = set(campaign) - _CAMPAIGN_FIELDS
    if bad:
        raise _bad(f"config.campaign.{sorted(bad)[0]}", "unknown campaign setting")
    cfg["campaign"] = campaign
    training = {**ROUND_DEFAULTS["training"], **(data.get("training") or {})}
    bad = set(training) - set(RUN_DEFAULTS)
    if bad:
        raise _bad(f"config.training.{sorted(bad)[0]}", "unknown training setting")
    cfg["training"] = training
    if cfg["simulate"] is not None:
        if not isinstance(cfg["simulate"], dict):
            raise _bad("config.simulate", "must be an object or null")
        sim = {**SIMULATE_DEFAULTS, **cfg["simulate"]}
        bad = set(sim) - set(SIMULATE_DEFAULTS)
        if bad:
            raise _bad(f"config.simulate.{sorted(bad)[0]}", "unknown simulation setting")
        from ratings.observers import ObserverError, load_observer
        from ratings.simulation import parse_mix

        try:
            load_observer(sim["observer"])
        except ObserverError as exc:
            raise _bad("config.simulate.observer", str(exc)) from None
        try:
            parse_mix(sim["mix"])
        except ValueError as exc:
            raise _bad("config.simulate.mix", str(exc)) from None
        if not isinstance(sim["raters"], int) or sim["raters"] < 1:
            raise _bad("config.simulate.raters", "must be an integer >= 1")
        cfg["simulate"] = sim
    return cfg


def start_round(*, series: str | None = None, config: dict[str, Any] | None = None,
                previous: Round | None = None) -> Round:
    """Store a new round with its face set (subjects new to the series). Nothing runs yet:
    ``advance`` (or the beat task) takes it from here."""
    cfg = validated_config(config)
    series = series or f"series-{secrets.token_hex(4)}"
    if promoted_version(ModelKind.HUMAN_PROXY) is None:
        raise AppError(errors.NO_PROMOTED_PROXY,
                       "No human proxy is promoted: train a prior proxy first.", field="proxy")
    with transaction.atomic():
        number = (Round.objects.select_for_update().filter(series=series)
                  .order_by("-number").values_list("number", flat=True).first())
        number = 0 if number is None else number + 1
        faces = selectors.pick_faces(series, cfg["faces"], seed=cfg["seed"] + number)
        if not faces:
            raise AppError(errors.NO_FACES,
                           "No usable source face of a subject new to this series is left.",
                           field="faces")
        rnd = Round.objects.create(series=series, number=number, config=cfg, previous=previous,
                                   stage_times={Stage.JOBS: {"started": _now_iso()}})
        rnd.faces.set(faces)
    return rnd


# --- Advancing ---------------------------------------------------------------------------------


def _now_iso() -> str:
    return timezone.now().isoformat()


def _acquire(round_id: Any, owner: str, seconds: float) -> bool:
    now = timezone.now()
    free = Round.objects.filter(pk=round_id, status=Round.Status.RUNNING).filter(
        Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    )
    return bool(free.update(lease_owner=owner, lease_until=now + timedelta(seconds=seconds)))


def _release(round_id: Any, owner: str) -> None:
    Round.objects.filter(pk=round_id, lease_owner=owner).update(lease_owner="", lease_until=None)


def advance(round_id: Any, *, owner: str | None = None, stages: int = 100) -> Round:
    """Run the round's current stage, and the next ones while each finishes at once, up to
    ``stages`` stages; returns when a stage waits (jobs, people, a training run), when the
    round is done, or when another advancer holds the lease."""
    owner = owner or f"advance-{uuid.uuid4().hex[:12]}"
    lease = float(settings.DEID_ROUND_LEASE_S)
    if not _acquire(round_id, owner, lease):
        return Round.objects.get(pk=round_id)
    try:
        for _ in range(stages):
            rnd = Round.objects.get(pk=round_id)
            if rnd.status != Round.Status.RUNNING or rnd.stage == Stage.DONE:
                break
            try:
                finished = STAGES[rnd.stage](rnd, owner)
            except AppError as exc:  # e.g. the broker is down: stay, retry at the next tick
                Round.objects.filter(pk=rnd.pk).update(error=f"{exc.code}: {exc.detail}")
                log.warning("round %s, stage %s: %s", rnd.pk, rnd.stage, exc.detail)
                break
            except Exception as exc:
                Round.objects.filter(pk=rnd.pk).update(
                    status=Round.Status.FAILED, error=f"{rnd.stage}: {type(exc).__name__}: {exc}",
                    finished=timezone.now(),
                )
                log.exception("round %s failed in stage %s", rnd.pk, rnd.stage)
                break
            if not finished:
                break
            _finish_stage(rnd.pk)
            _acquire(round_id, owner, lease)  # renew for the next stage
    finally:
        _release(round_id, owner)
    rnd = Round.objects.get(pk=round_id)
    if rnd.stage == Stage.DONE and rnd.status == Round.Status.SUCCEEDED:
        _start_next(rnd)
    return rnd


def _finish_stage(round_id: Any) -> None:
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=round_id)
        now = timezone.now()
        times = dict(rnd.stage_times)
        mine = dict(times.get(rnd.stage) or {"started": now.isoformat()})
        mine["finished"] = now.isoformat()
        mine["seconds"] = round(
            (now - datetime.fromisoformat(mine["started"])).total_seconds(), 3
        )
        times[rnd.stage] = mine
        nxt = Round.ORDER[Round.ORDER.index(rnd.stage) + 1]
        if nxt != Stage.DONE:
            times[nxt] = {"started": now.isoformat()}
        rnd.stage_times, rnd.stage, rnd.error = times, nxt, ""
        fields = ["stage_times", "stage", "error"]
        if nxt == Stage.DONE:
            rnd.status, rnd.finished = Round.Status.SUCCEEDED, now
            fields += ["status", "finished"]
        rnd.save(update_fields=fields)


def _start_next(rnd: Round) -> Round | None:
    """The next round of the series, once (its ``previous`` link is unique)."""
    left = int(rnd.config.get("rounds_left", 0))
    if left <= 0 or Round.objects.filter(previous=rnd).exists():
        return None
    cfg = {**rnd.config, "rounds_left": left - 1}
    try:
        return start_round(series=rnd.series, config=cfg, previous=rnd)
    except IntegrityError:  # another advancer started it at the same moment
        return None
    except AppError as exc:
        Round.objects.filter(pk=rnd.pk).update(error=f"next round not started: {exc.detail}")
        return None


# --- The stages: each returns True when done -------------------------------------------------


def _stage_jobs(rnd: Round, owner: str) -> bool:
    if rnd.batch_id is None:
        with transaction.atomic():
            rnd = Round.objects.select_for_update().get(pk=rnd.pk)
            if rnd.batch_id is None:
                batch = create_batch(images=list(rnd.faces.all()), params=rnd.config["job_params"])
                rnd.batch = batch
                rnd.proxy_before = batch.jobs.first().proxy_version
                rnd.save(update_fields=["batch", "proxy_before"])
    return not DeidJob.objects.filter(batch_id=rnd.batch_id, status__in=DeidJob.ACTIVE).exists()


def _versions_for_sampling(rnd: Round) -> list[ModelVersion]:
    """The proxy the jobs used and the version before it (their disagreement is information)."""
    out = [rnd.proxy_before] if rnd.proxy_before_id else []
    if rnd.proxy_before_id and rnd.proxy_before.parent_id:
        out.append(rnd.proxy_before.parent)
    return out


def _stage_campaign(rnd: Round, owner: str) -> bool:
    if rnd.state.get("pairs_made"):
        return True
    from models_app.proxy.sampling import expected_information, order_pairs
    from ratings.services.gold import add_gold_pairs

    from .scoring import expit, proxy_logits

    cfg = rnd.config
    candidates = selectors.pair_candidates(rnd)
    keys = [(c["source"], c["image"]) for c in candidates]
    t0 = time.perf_counter()
    versions = _versions_for_sampling(rnd)
    z = [proxy_logits(v, keys) for v in versions]
    p = [expit(zz) for zz in z]
    # A candidate a version could not score (no face context) counts as fully uncertain.
    p_matrix = np.nan_to_num(np.array(p), nan=0.5) if p else None
    z_matrix = np.nan_to_num(np.array(z), nan=0.0) if z else None
    order = order_pairs(p_matrix, len(candidates), method=cfg["sampling"],
                        seed=cfg["seed"] + rnd.number, logits=z_matrix)
    info = expected_information(p_matrix) if p_matrix is not None else None
    finals = [i for i in order if candidates[i]["rung"] == "final"]
    rungs = [i for i in order if candidates[i]["rung"] != "final"]
    budget = cfg["max_pairs"] or len(candidates)
    chosen = set(finals) | set(rungs[: max(0, budget - len(finals))])
    ordered = [i for i in order if i in chosen]
    sim = cfg.get("simulate") is not None
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        if rnd.state.get("pairs_made"):
            return True
        c = cfg["campaign"]
        campaign = Campaign.objects.create(
            name=f"Round {rnd.series} #{rnd.number}" + (" (simulated crowd)" if sim else ""),
            slug=f"round-{rnd.pk.hex[:12]}", status=Campaign.Status.DRAFT,
            instructions=c.get("instructions") or INSTRUCTIONS,
            consent_text=c.get("consent_text") or CONSENT,
            allows_simulation=sim, labels_include_simulated=sim,
            # An empty completion code keeps the campaign's own random one.
            **{k: v for k, v in c.items() if k not in ("instructions", "consent_text")
               and not (k == "completion_code" and not v)},
        )
        pairs = create_pairs(campaign, [
            {"image_a": candidates[i]["source"], "image_b": candidates[i]["image"],
             "kind": Pair.Kind.DEID, "deid_job": candidates[i]["job"]}
            for i in ordered
        ])
        DeidJob.objects.filter(batch_id=rnd.batch_id).update(campaign=campaign)
        faces = list(rnd.faces.all())
        two_subjects = len({f.subject_id for f in faces}) > 1
        gold = add_gold_pairs(campaign, faces, n_same=cfg["gold_same"],
                              n_different=cfg["gold_different"] if two_subjects else 0,
                              seed=cfg["seed"] + rnd.number)
        attention = create_pairs(campaign, [
            {"image_a": f.pk, "image_b": f.pk, "kind": Pair.Kind.ATTENTION, "expected_same": True}
            for f in faces[: cfg["attention"]]
        ])
        campaign.status = Campaign.Status.ACTIVE
        campaign.save(update_fields=["status"])
        by_pair = {}
        for pair, i in zip(pairs, ordered, strict=True):
            by_pair[str(pair.pk)] = {
                "rung": candidates[i]["rung"],
                "p_before": None if not p or np.isnan(p[0][i]) else float(p[0][i]),
                "logit_before": None if not z or np.isnan(z[0][i]) else float(z[0][i]),
                "information": None if info is None else float(info[i]),
            }
        rnd.campaign = campaign
        rnd.state = {**rnd.state, "pairs_made": True, "pairs": by_pair, "sampling": {
            "method": cfg["sampling"], "candidates": len(candidates), "chosen": len(ordered),
            "versions": [v.number for v in versions], "seconds": round(time.perf_counter() - t0, 3),
            "gold": len(gold), "attention": len(attention),
        }}
        rnd.save(update_fields=["campaign", "state"])
    return True


def _stage_judgments(rnd: Round, owner: str) -> bool:
    cov = selectors.judgment_coverage(rnd)
    if cov["pairs"] and cov["complete_pairs"] >= cov["pairs"]:
        return True
    sim = rnd.config.get("simulate")
    if sim is not None:
        if "crowd" not in rnd.state:
            _run_simulated_crowd(rnd, owner, sim)
        return True  # the crowd has done what it could; what is missing stays missing
    wait = int(rnd.config.get("judgments_wait_s") or 0)
    started = (rnd.stage_times.get(Stage.JUDGMENTS) or {}).get("started")
    if wait and started:
        elapsed = (timezone.now() - datetime.fromisoformat(started)).total_seconds()
        return elapsed >= wait
    return False


def _run_simulated_crowd(rnd: Round, owner: str, sim: dict[str, Any]) -> None:
    """A dry run's crowd rates the campaign over HTTP against the running site; its raters
    are marked simulated by the server (the campaign allows simulation)."""
    from ratings import binding
    from ratings.observers import load_observer
    from ratings.simulation import CrowdConfig, parse_mix, run_crowd

    campaign = rnd.campaign
    _acquire(rnd.pk, owner, float(sim["max_seconds"]) + settings.DEID_ROUND_LEASE_S)
    cfg = CrowdConfig(
        base_url=sim["base_url"], slug=campaign.slug, raters=int(sim["raters"]),
        mix=parse_mix(sim["mix"]), seed=int(sim["seed"]) + rnd.number,
        max_seconds=float(sim["max_seconds"]), time_scale=float(sim["time_scale"]),
        min_response_ms=campaign.min_response_ms,
        study_id=campaign.external_study_id or "SIM-STUDY",
        concurrency=int(sim["concurrency"]), patience_s=float(sim["patience_s"]),
        run_id=secrets.token_hex(3),
        sign=(lambda pid: binding.link_signature(campaign, pid))
        if campaign.require_signed_links else None,
    )
    report = run_crowd(cfg, load_observer(sim["observer"]))
    summary = {k: v for k, v in report.as_dict().items() if k != "raters"}
    summary["observer"] = sim["observer"]
    summary["raters"] = [{"kind": r.kind, "judgments": r.judgments, "end": r.end}
                         for r in report.raters]
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        rnd.state = {**rnd.state, "crowd": summary}
        rnd.save(update_fields=["state"])


def _stage_labels(rnd: Round, owner: str) -> bool:
    result = recompute_labels(rnd.campaign_id)
    Campaign.objects.filter(pk=rnd.campaign_id).update(status=Campaign.Status.CLOSED)
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        rnd.state = {**rnd.state, "labels": result}
        rnd.save(update_fields=["state"])
    return True


def _stage_training(rnd: Round, owner: str) -> bool:
    if rnd.training_run_id is None:
        if selectors.training_busy():
            return False  # someone else's run: ours starts when it ends
        config = {**rnd.config["training"], "warm_start": True, "auto_promote": True}
        run = request_training_run(trigger=TrainingRun.Trigger.ROUND, config=config)
        Round.objects.filter(pk=rnd.pk).update(training_run=run)
        return False
    run = TrainingRun.objects.get(pk=rnd.training_run_id)
    if run.status in TrainingRun.ACTIVE:
        return False
    version = ModelVersion.objects.filter(training_run=run).first()
    Round.objects.filter(pk=rnd.pk).update(model_version=version)
    return True


def _stage_report(rnd: Round, owner: str) -> bool:
    from .report import build_report, report_png

    report = build_report(rnd)
    png = report_png(report)
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        if rnd.report_plot:
            rnd.report_plot.storage.delete(rnd.report_plot.name)
        rnd.report = report
        rnd.report_plot.save("report.png", ContentFile(png), save=False)
        rnd.save(update_fields=["report", "report_plot"])
    return True


STAGES = {
    Stage.JOBS: _stage_jobs,
    Stage.CAMPAIGN: _stage_campaign,
    Stage.JUDGMENTS: _stage_judgments,
    Stage.LABELS: _stage_labels,
    Stage.TRAINING: _stage_training,
    Stage.REPORT: _stage_report,
}


# --- Operators ---------------------------------------------------------------------------------


def rerun_stage(rnd: Round, stage: str) -> Round:
    """Run the round again from ``stage``: that stage's own record is cleared (jobs: a new
    batch; campaign: a new campaign; judgments: the crowd runs again; training: a new run)
    and the round continues from there at the next advance. A failed or cancelled round
    runs again this way."""
    if stage not in STAGES:
        raise _bad("stage", f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        if rnd.lease_owner and rnd.lease_until and rnd.lease_until > timezone.now():
            raise AppError(errors.ROUND_BUSY, "The round is being advanced now; try again.",
                           field="stage")
        state = dict(rnd.state)
        if stage == Stage.JOBS:
            rnd.batch = None
        if stage in (Stage.JOBS, Stage.CAMPAIGN):
            state.pop("pairs_made", None)
            if rnd.campaign_id:
                Campaign.objects.filter(pk=rnd.campaign_id).update(status=Campaign.Status.CLOSED)
            rnd.campaign = None
        if stage in (Stage.JOBS, Stage.CAMPAIGN, Stage.JUDGMENTS):
            state.pop("crowd", None)
        if Round.ORDER.index(stage) <= Round.ORDER.index(Stage.TRAINING):
            rnd.training_run, rnd.model_version = None, None
        rnd.state, rnd.stage, rnd.status, rnd.error, rnd.finished = (
            state, stage, Round.Status.RUNNING, "", None
        )
        rnd.stage_times = {**rnd.stage_times, stage: {"started": _now_iso()}}
        rnd.save()
    return rnd


def cancel_round(rnd: Round) -> Round:
    with transaction.atomic():
        rnd = Round.objects.select_for_update().get(pk=rnd.pk)
        if rnd.status != Round.Status.RUNNING:
            raise AppError(errors.NOT_CANCELLABLE, f"The round is {rnd.status}.", field="status")
        rnd.status, rnd.finished = Round.Status.CANCELLED, timezone.now()
        rnd.save(update_fields=["status", "finished"])
    return rnd


def advance_all(owner: str | None = None) -> dict[str, str]:
    """The beat entry point: advance every running round whose lease is free."""
    return {rid: advance(rid, owner=owner).stage for rid in selectors.active_rounds()}
