"""Dashboard pages at scale: 10,000 jobs, 100,000 judgments and 50 proxy versions.

Creates a throwaway database on the server of ``DATABASE_URL`` (PostgreSQL; dropped at the
end), fills it with ``bulk_create``, then renders every page through Django's test client
(a staff operator signed in) and reports the median time and the query count per page.
Target: every page under 300 ms. The last line is one JSON object.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x nice -n 10 python -m bench.dashboard
    python -m bench.dashboard --quick     # 1,000 jobs, 10,000 judgments, 10 versions
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from bench.common import emit, log, machine, parse_args

QUICK = {"jobs": 1000, "judgments": 10_000, "versions": 10, "repeat": 3}


def _face_rows(n: int, kind: str, parents: list | None = None) -> list:
    from models_app.faces.models import FaceImage

    rows = []
    for i in range(n):
        pk = uuid.uuid4()
        rows.append(FaceImage(
            id=pk, kind=kind, parent_id=parents[i].pk if parents else None,
            file=f"faces/{pk.hex[:2]}/{pk.hex}.png", sha256=hashlib.sha256(pk.bytes).hexdigest(),
            width=160, height=160))
    return FaceImage.objects.bulk_create(rows, batch_size=2000)


def fill(jobs: int = 10_000, judgments: int = 100_000, versions: int = 50, raters: int = 500,
         rounds: int = 20, iterations: int = 40, traced_jobs: int = 200, series: str = "bench",
         ) -> dict[str, Any]:
    """Rows at scale, with ``bulk_create``: proxy versions with histories (one promoted),
    ``rounds`` finished rounds sharing the jobs, the jobs (``traced_jobs`` of them with
    ``iterations`` iterations each), one active campaign holding a deid pair per job,
    ``raters`` raters and ``judgments`` judgments spread over two days, and labels."""
    from django.utils import timezone

    from models_app.jobs.models import DeidBatch, DeidIteration, DeidJob
    from models_app.rounds.models import Round
    from models_app.training.models import ModelKind, ModelVersion, TrainingRun
    from ratings.models import Assignment, Campaign, Judgment, Pair, PairLabel, Rater

    now = timezone.now()
    history = [{"epoch": e, "train_loss": 0.7 / (e + 1), "val_loss": 0.7 / (e + 1) + 0.05,
                "val_auc": 0.6 + 0.01 * e, "val_brier": 0.25 - 0.002 * e} for e in range(30)]
    battery = {"passed": True, "failed": [], "invariance": {
        n: {"mean_abs_change": 0.01, "passed": True} for n in ("hue", "noise", "jpeg", "shift")},
        "effects": {n: {"mean_drop": 0.2, "passed": True} for n in ("negation", "hair")}}
    first = ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY).count()
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(status=TrainingRun.Status.SUCCEEDED, history=history,
                    data_snapshot={"pairs": [[i, i + 1, 0.5] for i in range(2000)]})
        for _ in range(versions))
    vs = ModelVersion.objects.bulk_create(
        ModelVersion(kind=ModelKind.HUMAN_PROXY, number=first + i + 1, training_run=runs[i],
                     status=ModelVersion.Status.RETIRED, file=f"models/v{i}.safetensors",
                     sha256=f"{first + i:064d}", promoted_at=now - timedelta(days=versions - i),
                     metrics={"held_out": {"auc": 0.7 + i / 1000, "brier": 0.2, "ece": 0.04},
                              "n_held_out": 400, "labels": 1000 * i},
                     gate={"passed": True, "reasons": []}, battery=battery,
                     config={"proxy": {"layers": list(range(200))}})
        for i in range(versions))
    ModelVersion.objects.filter(kind=ModelKind.HUMAN_PROXY, status=ModelVersion.Status.PROMOTED
                                ).update(status=ModelVersion.Status.RETIRED)
    ModelVersion.objects.filter(pk=vs[-1].pk).update(status=ModelVersion.Status.PROMOTED)

    sources = _face_rows(jobs, "source")
    outputs = _face_rows(jobs, "output", sources)
    campaign = Campaign.objects.create(
        name="bench", slug=f"bench-{uuid.uuid4().hex[:6]}", status=Campaign.Status.ACTIVE,
        instructions="x", consent_text="x", judgments_per_pair=3, krippendorff_alpha=0.5)
    batches = DeidBatch.objects.bulk_create(DeidBatch() for _ in range(rounds))
    statuses = ["succeeded", "finished", "failed", "succeeded", "cancelled", "running"]
    reasons = {"succeeded": "success", "finished": "max_iterations", "failed": "",
               "cancelled": "cancelled", "running": ""}
    job_rows = []
    for i in range(jobs):
        st = statuses[i % len(statuses)]
        job_rows.append(DeidJob(
            source=sources[i], batch=batches[i % rounds], status=st, stop_reason=reasons[st],
            output=outputs[i], campaign=campaign, proxy_version=vs[-1],
            params={"tau_a": 0.3, "tau_b": 0.5}, iterations_done=iterations,
            final_score_a=0.25, final_score_b=0.6,
            ladder=[{"threshold": 0.7, "iteration": 3, "score_a": 0.6, "score_b": 0.7,
                     "image": str(outputs[i].pk)}]))
    job_rows = DeidJob.objects.bulk_create(job_rows, batch_size=2000)
    DeidIteration.objects.bulk_create(
        (DeidIteration(job=j, index=k, score_a=0.9 - k / (2 * iterations), score_b=0.8,
                       seconds=0.4, loss={"identity": 1 / (k + 1), "features": 0.5,
                                          "objective": 0.3, "success": False})
         for j in job_rows[:traced_jobs] for k in range(iterations)), batch_size=5000)
    Round.objects.bulk_create(
        Round(series=series, number=i, status=Round.Status.SUCCEEDED, stage=Round.Stage.DONE,
              batch=batches[i], campaign=campaign if i == rounds - 1 else None,
              model_version=vs[-1], proxy_before=vs[-2] if versions > 1 else vs[-1],
              stage_times={s: {"seconds": 10.0 + i} for s in ("jobs", "campaign", "report")},
              report={"number": i, "jobs": jobs // rounds, "success": {"rate": 0.3 + i / 100},
                      "crowd": {"simulated": False},
                      "points": {"crowd": [0.5] * 300, "before": [0.4] * 300,
                                 "after": [0.6] * 300, "final": [True] * 300}})
        for i in range(rounds))
    Round.objects.create(series=series, number=rounds, stage=Round.Stage.JUDGMENTS,
                         campaign=None)

    pairs = Pair.objects.bulk_create(
        (Pair(campaign=campaign, image_a=sources[i], image_b=outputs[i], kind=Pair.Kind.DEID,
              deid_job_id=job_rows[i].pk) for i in range(jobs)), batch_size=5000)
    per_rater = max(1, judgments // raters)
    rater_rows = Rater.objects.bulk_create(
        Rater(campaign=campaign, source=Rater.Source.PROLIFIC, external_id=f"B{i:05d}",
              judgments_count=per_rater, gold_count=10, gold_correct=8, qualified=True,
              reliability=0.8, blocked=i % 50 == 0) for i in range(raters))
    span = timedelta(hours=48).total_seconds()
    assignments, judgment_rows, taken = [], [], [0] * jobs
    n = 0
    for ri, rater in enumerate(rater_rows):
        for j in range(per_rater):
            if n >= judgments:
                break
            pi = (ri * per_rater + j) % jobs
            when = now - timedelta(seconds=span * (1 - n / judgments))
            assignments.append(Assignment(
                campaign=campaign, rater=rater, pair=pairs[pi], state="submitted",
                issued=when, expires=when + timedelta(minutes=5), closed=when))
            taken[pi] += 1
            n += 1
    Assignment.objects.bulk_create(assignments, batch_size=5000)
    for k, a in enumerate(assignments):
        judgment_rows.append(Judgment(
            assignment=a, campaign=campaign, rater=a.rater, pair=a.pair, same=k % 3 == 0,
            confidence=3, response_ms=700 + k % 900, left_image_id=a.pair.image_a_id))
    Judgment.objects.bulk_create(judgment_rows, batch_size=5000)
    # created is auto_now_add: spread it over the two days afterwards, in SQL.
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("UPDATE ratings_judgment j SET created = a.issued FROM ratings_assignment a "
                    "WHERE a.id = j.assignment_id AND j.campaign_id = %s", [campaign.pk])
    PairLabel.objects.bulk_create(
        (PairLabel(pair=p, score_a=(i % 100) / 100, same=i % 100 >= 50, n_judgments=3,
                   method="dawid_skene") for i, p in enumerate(pairs)), batch_size=5000)
    return {"campaign": campaign, "round": Round.objects.get(series=series, number=rounds - 1),
            "job": job_rows[0], "versions": vs}


def pages(world: dict[str, Any]) -> dict[str, str]:
    from django.urls import reverse

    r, c = world["round"], world["campaign"]
    return {
        "overview": reverse("dashboard:overview"),
        "live_overview": reverse("dashboard:live-overview"),
        "round": reverse("dashboard:round", args=[r.pk]),
        "jobs": reverse("dashboard:jobs"),
        "jobs_filtered": reverse("dashboard:jobs") + f"?status=succeeded&stop_reason=success&round={r.pk}",
        "jobs_last_page": reverse("dashboard:jobs") + "?page=last",
        "gallery": reverse("dashboard:gallery") + f"?round={r.pk}",
        "job": reverse("dashboard:job", args=[world["job"].pk]),
        "campaign": reverse("dashboard:campaign", args=[c.pk]),
        "proxy": reverse("dashboard:proxy"),
    }


def time_pages(client, urls: dict[str, str], repeat: int) -> dict[str, dict[str, float]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    out = {}
    for name, url in urls.items():
        resp = client.get(url)  # warm: templates compiled, caches filled
        assert resp.status_code == 200, (name, resp.status_code)
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as q:
                t = time.perf_counter()
                resp = client.get(url)
                times.append((time.perf_counter() - t) * 1000)
            assert resp.status_code == 200
        out[name] = {"median_ms": round(statistics.median(times), 1),
                     "max_ms": round(max(times), 1), "queries": len(q),
                     "sql_ms": round(sum(float(x["time"]) for x in q.captured_queries) * 1000, 1)}
        log(f"{name}: {out[name]}")
        for x in sorted(q.captured_queries, key=lambda x: -float(x["time"]))[:2]:
            log(f"    {float(x['time']) * 1000:.1f} ms  {x['sql'][:160]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--judgments", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db-name", default="bench_dashboard")
    args = parse_args(ap, QUICK)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL server (a scratch database is made there)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "deidplatform.settings_test")
    import tempfile

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from deidplatform.permissions import OPERATOR, ensure_roles

    settings.MEDIA_ROOT = settings.PRIVATE_MEDIA_ROOT = tempfile.mkdtemp(prefix="bench-dash-")
    setup_test_environment()
    connection.settings_dict.setdefault("TEST", {})["NAME"] = args.db_name
    old = connection.settings_dict["NAME"]
    log(f"creating {args.db_name}")
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        t = time.perf_counter()
        world = fill(jobs=args.jobs, judgments=args.judgments, versions=args.versions)
        fill_s = time.perf_counter() - t
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        log(f"filled in {fill_s:.1f} s")
        from django.contrib.auth.models import Group, User

        ensure_roles()
        user = User.objects.create_user("bench-op", password="x", is_staff=True)
        user.groups.add(Group.objects.get(name=OPERATOR))
        client = Client()
        client.force_login(user)
        results = time_pages(client, pages(world), args.repeat)
    finally:
        connection.creation.destroy_test_db(old, verbosity=0)
    worst = max(v["median_ms"] for v in results.values())
    emit({"bench": "dashboard", "machine": machine(), "jobs": args.jobs,
          "judgments": args.judgments, "versions": args.versions, "fill_s": round(fill_s, 1),
          "pages": results, "worst_median_ms": worst, "target_ms": 300,
          "all_under_target": worst < 300})


if __name__ == "__main__":
    main()
