"""A small but complete world for the dashboard: proxy versions (promoted, retired,
rejected, with metrics, battery and a training history), a finished round with its jobs
(iterations, ladder, output images), its campaign with pairs, raters, judgments and labels,
and a running round. Real rows through the factories and the platform's own services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from models_app.faces.models import FaceImage
from models_app.jobs.models import DeidBatch, DeidIteration, DeidJob
from models_app.rounds.models import Round
from models_app.training import registry
from models_app.training.models import ModelKind, ModelVersion, TrainingRun
from ratings.models import Assignment, Campaign, Judgment, Pair, PairLabel, Rater
from tests.ratings.factories import add_pairs, make_campaign, make_face

BATTERY_OK = {"passed": True, "failed": [], "invariance": {"hue": {"mean_abs_change": 0.01,
              "passed": True}}, "effects": {"negation": {"mean_drop": 0.3, "passed": True}}}
HISTORY = [{"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_loss": 0.72 - 0.08 * e,
            "val_auc": 0.6 + 0.05 * e, "val_brier": 0.25 - 0.01 * e} for e in range(4)]


@dataclass
class World:
    versions: list[ModelVersion]
    round: Round
    running: Round
    campaign: Campaign
    jobs: list[DeidJob]
    raters: list[Rater]


def make_version(number_hint: int, *, status: str | None = None, battery=None,
                 history=None) -> ModelVersion:
    run = TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED,
                                     history=history if history is not None else HISTORY)
    v = registry.register_version(
        kind=ModelKind.HUMAN_PROXY, weights=f"w{number_hint}-{run.pk}".encode(), config={},
        metrics={"held_out": {"auc": 0.70 + number_hint / 100, "brier": 0.2, "ece": 0.05},
                 "n_held_out": 120, "labels": 300},
        training_run=run, gate={"passed": status != "rejected",
                                "reasons": [] if status != "rejected" else ["AUC worse"]},
        battery=battery if battery is not None else BATTERY_OK,
    )
    if status == "rejected":
        ModelVersion.objects.filter(pk=v.pk).update(status=ModelVersion.Status.REJECTED)
        v.refresh_from_db()
    return v


def make_job(batch: DeidBatch | None, source: FaceImage, *, iterations: int = 5,
             status: str = DeidJob.Status.SUCCEEDED, proxy: ModelVersion | None = None,
             campaign: Campaign | None = None, with_output: bool = True) -> DeidJob:
    output = rung = None
    if with_output:
        output = make_face(900 + source.width)
        rung = make_face(901 + source.width)
        FaceImage.objects.filter(pk__in=[output.pk, rung.pk]).update(
            kind=FaceImage.Kind.OUTPUT, parent=source)
    job = DeidJob.objects.create(
        source=source, batch=batch, status=status, proxy_version=proxy, campaign=campaign,
        params={"tau_a": 0.3, "tau_b": 0.5}, output=output,
        stop_reason="success" if status == DeidJob.Status.SUCCEEDED else "",
        iterations_done=iterations, final_score_a=0.2, final_score_b=0.7,
        ladder=[{"threshold": 0.7, "iteration": 2, "score_a": 0.65, "score_b": 0.8,
                 "image": str(rung.pk)}] if rung else [],
    )
    DeidIteration.objects.bulk_create(
        DeidIteration(job=job, index=i, score_a=0.9 - 0.15 * i, score_b=0.9 - 0.04 * i,
                      seconds=0.5, loss={"identity": 1.0 - 0.1 * i, "features": 0.5 + 0.05 * i,
                                         "objective": 0.4, "success": i == iterations - 1})
        for i in range(iterations)
    )
    return job


def judge(campaign: Campaign, raters: list[Rater], pairs: list[Pair], *, spread_hours: int = 3
          ) -> int:
    """Every rater judges every pair (bulk rows, counters updated), spread over hours."""
    now = timezone.now()
    assignments, judgments = [], []
    for ri, rater in enumerate(raters):
        for pi, pair in enumerate(pairs):
            when = now - timedelta(minutes=(ri * len(pairs) + pi) * 60 * spread_hours
                                   // max(1, len(raters) * len(pairs)))
            assignments.append(Assignment(
                campaign=campaign, rater=rater, pair=pair, state=Assignment.State.SUBMITTED,
                issued=when, expires=when + timedelta(minutes=5), closed=when))
    Assignment.objects.bulk_create(assignments)
    for a in assignments:
        judgments.append(Judgment(
            assignment=a, campaign=campaign, rater=a.rater, pair=a.pair,
            same=(a.rater_id + a.pair_id) % 3 == 0, confidence=3,
            response_ms=800 + 100 * (a.pair_id % 7), left_image_id=a.pair.image_a_id))
    Judgment.objects.bulk_create(judgments)
    # created is auto_now_add: spread the rows over the last hours afterwards.
    for a, j in zip(assignments, judgments, strict=True):
        j.created = a.issued
    Judgment.objects.bulk_update(judgments, ["created"])
    # Counted judgments hold their pair's slots, as the rating path keeps them.
    Pair.objects.filter(pk__in=[p.pk for p in pairs]).update(taken=len(raters))
    for rater in raters:
        Rater.objects.filter(pk=rater.pk).update(judgments_count=len(pairs), reliability=0.8,
                                                 gold_count=2, gold_correct=1)
    return len(judgments)


def build_world(n_jobs: int = 3, n_raters: int = 3) -> World:
    v1 = make_version(1)
    registry.promote(v1)
    v2 = make_version(2)
    registry.promote(v2)  # v1 retired: a rollback has somewhere to go
    v3 = make_version(3, status="rejected")
    campaign = make_campaign(allows_simulation=True, judgments_per_pair=2)
    batch = DeidBatch.objects.create()
    sources = [make_face(10 + i) for i in range(n_jobs)]
    jobs = [make_job(batch, s, proxy=v2, campaign=campaign) for s in sources]
    pairs = []
    for job in jobs:
        pairs += add_pairs(campaign, 1, images=[job.source, job.output])
    for p, job in zip(pairs, jobs, strict=True):
        Pair.objects.filter(pk=p.pk).update(deid_job_id=job.pk)
    raters = [Rater.objects.create(campaign=campaign, source=Rater.Source.PROLIFIC,
                                   external_id=f"P{i:03d}") for i in range(n_raters)]
    raters.append(Rater.objects.create(campaign=campaign, source=Rater.Source.PROLIFIC,
                                       external_id="SIM-careful-0"))
    assert raters[-1].simulated
    judge(campaign, raters, pairs)
    for i, p in enumerate(pairs):
        PairLabel.objects.create(pair=p, score_a=i / max(1, len(pairs)), same=False,
                                 n_judgments=n_raters, method="dawid_skene")
    Campaign.objects.filter(pk=campaign.pk).update(krippendorff_alpha=0.42,
                                                   labels_updated=timezone.now())
    campaign.refresh_from_db()
    now = timezone.now().isoformat()
    rnd = Round.objects.create(
        series="dash", number=0, status=Round.Status.SUCCEEDED, stage=Round.Stage.DONE,
        batch=batch, campaign=campaign, proxy_before=v1, model_version=v2,
        training_run=v2.training_run, finished=timezone.now(),
        stage_times={s: {"started": now, "finished": now, "seconds": 1.5 + i}
                     for i, s in enumerate(["jobs", "campaign", "judgments", "labels",
                                            "training", "report"])},
        report={"number": 0, "jobs": n_jobs,
                "success": {"rate": 0.5, "rate_of_judged": 0.5, "successes": 1, "tau_a": 0.3,
                            "tau_b": 0.5, "loop_believed_rate": 0.7, "belief_gap": 0.2,
                            "ceiling": {"gold_different": {"majority_different_rate": 0.625}}},
                "crowd": {"simulated": True, "observer": "inner_face_band"},
                "proxy_before": {"version": 1, "all_pairs": {"n": 3, "auc": 0.6, "brier": 0.2,
                                                             "agreement": 0.6}},
                "proxy_after": {"version": 2, "status": "promoted",
                                "all_pairs": {"n": 3, "auc": 0.7, "brier": 0.18,
                                              "agreement": 0.7}},
                "gate": {"passed": True, "reasons": []},
                "points": {"crowd": [0.1, 0.5, 0.9], "before": [0.3, 0.4, 0.6],
                           "after": [0.2, 0.5, 0.8], "final": [True, True, False]}},
    )
    running = Round.objects.create(series="dash", number=1, previous=rnd,
                                   stage=Round.Stage.JUDGMENTS, campaign=None,
                                   stage_times={"jobs": {"started": now}})
    return World(versions=[v1, v2, v3], round=rnd, running=running, campaign=campaign,
                 jobs=jobs, raters=raters)
