"""Reads of the rounds domain: face sets, pair candidates, progress, and the facts a round
report is computed from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from django.db.models import Count

from models_app.faces.models import FaceImage
from models_app.jobs.models import DeidJob
from models_app.training.models import ModelKind, TrainingRun
from ratings.models import Judgment, Pair, PairLabel
from ratings.selectors import label_judgments

from .models import Round


def used_subjects(series: str) -> set[str]:
    """Subjects whose faces an earlier round of the series already used."""
    return {
        str(s) for s in Round.objects.filter(series=series)
        .values_list("faces__subject_id", flat=True) if s is not None
    }


def pick_faces(series: str, n: int, seed: int, *, exclude: Iterable[str] = ()) -> list[FaceImage]:
    """``n`` usable source images, one per subject, of subjects the series never used
    (a disjoint set of subjects per round), chosen by ``seed``."""
    skip = used_subjects(series) | {str(s) for s in exclude}
    per_subject: dict[str, FaceImage] = {}
    qs = FaceImage.objects.filter(
        kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK, subject__isnull=False,
        landmarks__isnull=False,
    ).order_by("subject_id", "id").only("id", "subject_id")
    for img in qs:
        key = str(img.subject_id)
        if key not in skip:
            per_subject.setdefault(key, img)
    keys = sorted(per_subject)
    order = np.random.default_rng(seed).permutation(len(keys))
    return [per_subject[keys[i]] for i in order[:n]]


def pair_candidates(rnd: Round) -> list[dict[str, Any]]:
    """What people could judge from the round's jobs: per job, each rung of its ladder and
    its final output against the source (an image shared by rungs is one candidate).
    ``rung``: the score-A threshold crossed, or "final"."""
    out: list[dict[str, Any]] = []
    if rnd.batch_id is None:
        return out
    jobs = DeidJob.objects.filter(batch_id=rnd.batch_id).order_by("created", "id")
    for job in jobs:
        seen: set[str] = set()
        if job.output_id is not None:
            seen.add(str(job.output_id))
            out.append({"job": str(job.pk), "source": str(job.source_id),
                        "image": str(job.output_id), "rung": "final"})
        for rung in job.ladder:
            image = str(rung["image"])
            if image not in seen:
                seen.add(image)
                out.append({"job": str(job.pk), "source": str(job.source_id), "image": image,
                            "rung": float(rung["threshold"])})
    return out


def job_counts(rnd: Round) -> dict[str, int]:
    if rnd.batch_id is None:
        return {}
    return dict(DeidJob.objects.filter(batch_id=rnd.batch_id).values_list("status")
                .annotate(n=Count("pk")).values_list("status", "n"))


def judgment_coverage(rnd: Round) -> dict[str, int]:
    """Counted judgments (those labels use) against what the deid pairs want (k each)."""
    if rnd.campaign_id is None:
        return {"pairs": 0, "wanted": 0, "counted": 0, "complete_pairs": 0, "all": 0}
    k = rnd.campaign.judgments_per_pair
    deid = Pair.objects.filter(campaign_id=rnd.campaign_id, kind=Pair.Kind.DEID, active=True)
    counts = dict(
        label_judgments(rnd.campaign_id).filter(pair__kind=Pair.Kind.DEID)
        .values_list("pair_id").annotate(n=Count("pk")).values_list("pair_id", "n")
    )
    pair_ids = list(deid.values_list("pk", flat=True))
    return {
        "pairs": len(pair_ids), "wanted": k * len(pair_ids),
        "counted": sum(min(counts.get(p, 0), k) for p in pair_ids),
        "complete_pairs": sum(counts.get(p, 0) >= k for p in pair_ids),
        "all": Judgment.objects.filter(campaign_id=rnd.campaign_id).count(),
    }


def progress(rnd: Round) -> dict[str, Any]:
    """Where the round stands: stage, jobs by status, judgments, the training run."""
    run = rnd.training_run
    campaign = rnd.campaign
    return {
        "stage": rnd.stage, "status": rnd.status,
        "campaign": None if campaign is None else {
            "slug": campaign.slug, "status": campaign.status,
            "completion_code": campaign.completion_code,
            # What a crowd platform's study links to (Prolific fills in the braces).
            "entry_link": f"/rate/{campaign.slug}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
                          "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
        },
        "jobs": job_counts(rnd),
        "judgments": judgment_coverage(rnd),
        "training_run": None if run is None else {
            "id": str(run.pk), "status": run.status, "epochs": len(run.history or []),
        },
        "error": rnd.error,
    }


def training_busy() -> bool:
    """A proxy run is queued or running (a generator retraining does not hold a round up)."""
    return TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE,
                                      kind=ModelKind.HUMAN_PROXY).exists()


def round_pairs(rnd: Round) -> list[dict[str, Any]]:
    """The round's deid pairs with their job, rung, crowd label and counted votes."""
    if rnd.campaign_id is None:
        return []
    pairs = list(
        Pair.objects.filter(campaign_id=rnd.campaign_id, kind=Pair.Kind.DEID)
        .values("pk", "image_a_id", "image_b_id", "deid_job_id")
    )
    labels = {pl.pair_id: pl for pl in PairLabel.objects.filter(pair__campaign_id=rnd.campaign_id)}
    votes: dict[int, list[int]] = {}
    for pid, same in label_judgments(rnd.campaign_id).filter(
        pair__kind=Pair.Kind.DEID
    ).values_list("pair_id", "same"):
        votes.setdefault(pid, [0, 0])[0 if same else 1] += 1
    jobs = {str(j.pk): j for j in DeidJob.objects.filter(batch_id=rnd.batch_id)}
    out = []
    for p in pairs:
        job = jobs.get(str(p["deid_job_id"]))
        if job is None:
            continue
        label = labels.get(p["pk"])
        same_votes, diff_votes = votes.get(p["pk"], [0, 0])
        final = job.output_id is not None and p["image_b_id"] == job.output_id
        out.append({
            "pair": p["pk"], "job": job, "source": str(p["image_a_id"]),
            "image": str(p["image_b_id"]), "final": final,
            "crowd_score_a": None if label is None else float(label.score_a),
            "crowd_same": None if label is None else bool(label.same),
            "votes_same": same_votes, "votes_different": diff_votes,
        })
    return out


def known_pair_votes(campaign_id: int) -> dict[str, list[tuple[int, int]]]:
    """(same, different) counted votes of each gold pair, by kind (``gold_same``,
    ``gold_different``): how the crowd answers pairs whose answer is known."""
    out: dict[str, dict[int, list[int]]] = {Pair.Kind.GOLD_SAME: {}, Pair.Kind.GOLD_DIFFERENT: {}}
    for pid, kind, same in label_judgments(campaign_id).filter(
        pair__kind__in=list(out)
    ).values_list("pair_id", "pair__kind", "same"):
        out[kind].setdefault(pid, [0, 0])[0 if same else 1] += 1
    return {str(k): [tuple(v) for _, v in sorted(d.items())] for k, d in out.items()}


def simulated_judgments(campaign_id: int) -> int:
    return Judgment.objects.filter(campaign_id=campaign_id, rater__simulated=True).count()


def judgments_by_kind(campaign_id: int) -> dict[str, int]:
    return dict(Judgment.objects.filter(campaign_id=campaign_id).values_list("pair__kind")
                .annotate(n=Count("pk")).values_list("pair__kind", "n"))


def active_rounds() -> list[str]:
    return [str(pk) for pk in Round.objects.filter(status=Round.Status.RUNNING)
            .order_by("created").values_list("pk", flat=True)]
