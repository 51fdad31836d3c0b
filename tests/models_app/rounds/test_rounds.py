"""Closed-loop rounds (issue 11, items 1, 3 and 6).

The end-to-end test runs one small round on real PostgreSQL with a real Celery worker (jobs,
training), a running server (``live_server``) and a simulated crowd rating over HTTP. The
others pin down the parts a round is made of: leases (resume after a killed advancer),
re-running a stage, the round settings' errors, and the API.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from models_app.jobs.models import DeidJob
from models_app.rounds import services
from models_app.rounds.models import Round
from models_app.training.models import ModelVersion, TrainingRun
from ratings.models import Campaign, Judgment, Pair, PairLabel
from tests.models_app.fixtures import ingest_subjects, promote_untrained_proxy

# Small and quick: 4 faces, 6 loop iterations, a tiny campaign, 3 epochs of training.
SMALL = {
    "faces": 4,
    "job_params": {"max_iterations": 6, "ladder": [0.9, 0.7]},
    "gold_same": 2, "gold_different": 2, "attention": 1,
    # The shipped observers are weak (BENCHMARKS.md): a lenient pass mark keeps careful
    # simulated raters in, while the spammer's attention check still blocks it.
    "campaign": {"judgments_per_pair": 2, "qualification_size": 2, "gold_rate": 0.15,
                 "attention_rate": 0.1, "min_response_ms": 300, "pass_mark": 0.5},
    "training": {"natural_same": 30, "natural_different": 30,
                 "train": {"stop": {"max_epochs": 3}}},
}


@pytest.fixture
def worker_media(settings, celery_worker_process):
    settings.MEDIA_ROOT = celery_worker_process.media_root
    return celery_worker_process.media_root


@pytest.mark.slow
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_one_round_end_to_end_with_worker_server_and_simulated_crowd(
    worker_media, live_server, lfw_dir
):
    groups = ingest_subjects(lfw_dir, n_subjects=12, per_subject=3)
    prior = promote_untrained_proxy()
    out = io.StringIO()
    call_command(
        "run_rounds", rounds=1, series="e2e", config=json.dumps(SMALL),
        observer="inner_face_band", raters=10, mix="careful=6,noisy=2,same_biased=1,spammer=1",
        base_url=live_server.url, time_scale=0.0005, poll=0.5, timeout=600, stdout=out,
    )
    lines = [json.loads(x) for x in out.getvalue().strip().splitlines()]
    assert lines[-1]["round_report"]["number"] == 0
    assert {x.get("stage") for x in lines[:-1]} >= {"jobs", "done"}  # progress was shown

    rnd = Round.objects.get(series="e2e", number=0)
    assert rnd.status == Round.Status.SUCCEEDED and rnd.stage == Round.Stage.DONE
    # The face set: one face per subject, all different subjects.
    faces = list(rnd.faces.all())
    assert len(faces) == 4 and len({f.subject_id for f in faces}) == 4
    assert {f.pk for f in faces} <= {im.pk for g in groups for im in g}
    # Jobs ran with the prior proxy on the worker.
    jobs = list(DeidJob.objects.filter(batch=rnd.batch))
    assert len(jobs) == 4 and all(j.status not in DeidJob.ACTIVE for j in jobs)
    assert rnd.proxy_before == prior and all(j.proxy_version == prior for j in jobs)
    # The campaign: each job's output and rungs, gold and attention; simulated; now closed.
    camp = Campaign.objects.get(pk=rnd.campaign_id)
    assert camp.status == Campaign.Status.CLOSED and camp.allows_simulation
    kinds = dict((k, Pair.objects.filter(campaign=camp, kind=k).count()) for k in Pair.Kind.values)
    outputs = sum(j.output_id is not None for j in jobs)
    assert kinds["deid"] >= outputs >= 1
    assert kinds["gold_same"] >= 1 and kinds["gold_different"] == 2 and kinds["attention"] == 1
    assert rnd.state["sampling"]["method"] == "active"
    assert rnd.state["sampling"]["chosen"] == kinds["deid"]
    # Judgments came over HTTP from simulated raters only, and became labels (a dry run).
    judgments = Judgment.objects.filter(campaign=camp)
    assert judgments.count() > 0
    assert not judgments.filter(rater__simulated=False).exists()
    assert PairLabel.objects.filter(pair__campaign=camp, pair__kind="deid").exists()
    # Retraining: a warm-started run on the labels, gated against the prior.
    run = TrainingRun.objects.get(pk=rnd.training_run_id)
    assert run.status == TrainingRun.Status.SUCCEEDED and run.trigger == "round", run.error
    assert run.labels_used > 0
    version = ModelVersion.objects.get(pk=rnd.model_version_id)
    assert version.parent == prior and version.training_run == run
    assert version.gate and "passed" in version.gate
    # Trained on a simulated crowd's labels, and says so.
    assert version.metrics["simulated_labels"] == run.labels_used > 0
    # The report: crowd, proxy before/after, success, judgments, stage times, and a plot.
    rep = rnd.report
    assert rep["crowd"]["simulated"] is True and rep["crowd"]["observer"] == "inner_face_band"
    assert rep["proxy_before"]["version"] == prior.number
    assert rep["proxy_after"]["version"] == version.number
    assert rep["proxy_after"]["all_pairs"]["n"] == rep["crowd"]["pairs_labelled"] > 0
    assert 0.0 <= rep["success"]["rate"] <= 1.0 and rep["jobs"] == 4
    assert 0.0 <= rep["success"]["natural_share"] <= 1.0  # every output has its figure
    # The ceiling: how this crowd answered the known-different gold pairs.
    known = Judgment.objects.filter(campaign=camp, pair__kind="gold_different",
                                    rater__blocked=False)
    ceiling = rep["success"]["ceiling"]["gold_different"]
    assert ceiling["pairs"] == 2 and ceiling["judgments"] == known.count() > 0
    assert ceiling["different_vote_share"] == round(
        known.filter(same=False).count() / known.count(), 4)
    assert 0.0 <= ceiling["majority_different_rate"] <= 1.0
    assert rep["judgments"]["all"] == judgments.count() == rep["judgments"]["simulated"]
    assert set(rep["stage_seconds"]) == {"jobs", "campaign", "judgments", "labels", "training"}
    assert all(v >= 0 for v in rep["stage_seconds"].values())
    assert rnd.stage_times["report"]["seconds"] >= 0
    with rnd.report_plot.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# --- The parts, without the worker --------------------------------------------------------------


@pytest.fixture
def round_in_labels(db, lfw_dir):
    ingest_subjects(lfw_dir, n_subjects=3, per_subject=1)
    promote_untrained_proxy()
    rnd = services.start_round(series="parts", config={"faces": 3})
    camp = Campaign.objects.create(name="r", slug="r-parts", status=Campaign.Status.ACTIVE)
    Round.objects.filter(pk=rnd.pk).update(stage=Round.Stage.LABELS, campaign=camp,
                                           state={"pairs_made": True})
    return Round.objects.get(pk=rnd.pk)


def test_a_live_lease_keeps_others_out_and_a_lapsed_one_is_resumed(round_in_labels):
    rnd = round_in_labels
    # Another advancer holds it (alive): this one does nothing.
    Round.objects.filter(pk=rnd.pk).update(lease_owner="other",
                                           lease_until=timezone.now() + timedelta(minutes=5))
    assert services.advance(rnd.pk, stages=1).stage == Round.Stage.LABELS
    # That advancer was killed: once its lease lapses the next one resumes at the stage the
    # database shows (labels computed, campaign closed, on to training).
    Round.objects.filter(pk=rnd.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    after = services.advance(rnd.pk, stages=1)
    assert after.stage == Round.Stage.TRAINING and after.lease_owner == ""
    assert after.stage_times["labels"]["seconds"] >= 0
    assert Campaign.objects.get(pk=rnd.campaign_id).status == Campaign.Status.CLOSED


def test_rerun_stage_clears_that_stage_and_runs_a_failed_round_again(round_in_labels):
    rnd = round_in_labels
    Round.objects.filter(pk=rnd.pk).update(status=Round.Status.FAILED, error="labels: boom",
                                           stage=Round.Stage.TRAINING)
    again = services.rerun_stage(Round.objects.get(pk=rnd.pk), "campaign")
    assert again.status == Round.Status.RUNNING and again.stage == Round.Stage.CAMPAIGN
    assert again.campaign_id is None and "pairs_made" not in again.state and again.error == ""
    assert Campaign.objects.get(slug="r-parts").status == Campaign.Status.CLOSED


def test_round_settings_errors_name_the_field(db):
    cases = [({"faces": 0}, "config.faces"), ({"sampling": "greedy"}, "config.sampling"),
             ({"colour": 1}, "config.colour"),
             ({"campaign": {"judgments": 3}}, "config.campaign.judgments"),
             ({"job_params": {"tau_a": 2}}, "config.job_params.tau_a"),
             ({"simulate": {"observer": "nowhere:x"}}, "config.simulate.observer"),
             ({"training": {"epochs": 3}}, "config.training.epochs")]
    for config, field in cases:
        with pytest.raises(services.AppError) as exc:
            services.validated_config(config)
        assert exc.value.field == field, config


def test_api_starts_a_round_and_refuses_bad_input(staff_client, lfw_dir, settings):
    ingest_subjects(lfw_dir, n_subjects=3, per_subject=1)
    r = staff_client.post("/api/rounds/", {"config": {"faces": 2}}, content_type="application/json")
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "proxy"  # none promoted
    promote_untrained_proxy()
    r = staff_client.post("/api/rounds/", {"series": "api", "config": {"faces": 2, "sampling": "x"}},
                          content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "config.sampling"
    assert not Round.objects.exists()  # nothing stored by a refused request
    r = staff_client.post("/api/rounds/", {"series": "api", "config": {"faces": 2}},
                          content_type="application/json")
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["faces"] == 2 and body["stage"] == "jobs" and body["progress"]["stage"] == "jobs"
    r = staff_client.post(f"/api/rounds/{body['id']}/stage/", {"stage": "nope"},
                          content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "stage"
    # A second round of the series takes subjects the first did not use.
    r2 = staff_client.post("/api/rounds/", {"series": "api", "config": {"faces": 2}},
                           content_type="application/json")
    assert r2.status_code == 202 and r2.json()["number"] == 1 and r2.json()["faces"] == 1
    first = Round.objects.get(pk=body["id"])
    second = Round.objects.get(pk=r2.json()["id"])
    assert not ({f.subject_id for f in first.faces.all()} & {f.subject_id for f in second.faces.all()})
    assert staff_client.post(f"/api/rounds/{body['id']}/cancel/").json()["status"] == "cancelled"


def test_run_rounds_cli_errors_exit_non_zero(db):
    with pytest.raises(CommandError, match="--config"):
        call_command("run_rounds", config="{not json")
    with pytest.raises(CommandError, match="--resume"):
        call_command("run_rounds", resume="no-such-series")
    with pytest.raises(CommandError, match="proxy"):
        call_command("run_rounds", faces=2)  # no promoted proxy


def test_known_pairs_ceiling_is_the_majority_chance_of_the_different_vote_share():
    from models_app.rounds.report import known_pairs_ceiling, majority_rate

    assert majority_rate(1.0, 7) == 1.0 and majority_rate(0.0, 7) == 0.0
    assert abs(majority_rate(0.5, 7) - 0.5) < 1e-12
    assert abs(majority_rate(0.5, 4) - 5 / 16) < 1e-12  # a 2-2 tie is no majority
    assert majority_rate(0.6, 7) > 0.6 > majority_rate(0.6, 1) - 1e-12
    c = known_pairs_ceiling({"gold_different": [(1, 3), (2, 2)], "gold_same": [(5, 1)]}, 3)
    assert c["gold_different"]["different_vote_share"] == 0.625
    want = (majority_rate(0.75, 3) + majority_rate(0.5, 3)) / 2
    assert c["gold_different"]["majority_different_rate"] == round(want, 4)
    assert c["gold_same"] == {"pairs": 1, "judgments": 6, "same_vote_share": round(5 / 6, 4)}
    assert known_pairs_ceiling({}, 7)["gold_different"] == {"pairs": 0, "judgments": 0}


def test_proxy_vs_crowd_scores_auc_brier_and_agreement():
    import numpy as np

    from models_app.rounds.report import proxy_vs_crowd

    crowd = np.array([0.9, 0.8, 0.1, 0.2, np.nan])
    good = proxy_vs_crowd(np.array([0.7, 0.9, 0.2, 0.1, 0.5]), crowd)
    assert good["n"] == 4 and good["auc"] == 1.0 and good["agreement"] == 1.0
    assert good["brier"] == pytest.approx(np.mean([0.04, 0.01, 0.01, 0.01]), abs=1e-4)
    bad = proxy_vs_crowd(np.array([0.1, 0.2, 0.9, 0.8, 0.5]), crowd)
    assert bad["auc"] == 0.0 and bad["agreement"] == 0.0
    one_answer = proxy_vs_crowd(np.array([0.5, 0.5]), np.array([0.9, 0.8]))
    assert one_answer["auc"] is None and one_answer["n"] == 2  # AUC needs both answers
    assert proxy_vs_crowd(np.array([np.nan]), np.array([0.5]))["n"] == 0
    # Saturated P ties and ranks nothing; the log-odds still rank the pairs.
    sat = np.array([1.0, 1.0, 1.0, 1.0, 0.5])
    assert proxy_vs_crowd(sat, crowd)["auc"] == 0.5
    z = np.array([80.0, 95.0, 40.0, 30.0, 0.0])
    assert proxy_vs_crowd(sat, crowd, z)["auc"] == 1.0


def test_the_beat_task_advances_every_running_round_but_not_finished_ones(round_in_labels):
    from models_app.rounds.tasks import advance_rounds_task

    done = services.start_round(series="other", config={"faces": 1})
    Round.objects.filter(pk=done.pk).update(status=Round.Status.CANCELLED)
    out = advance_rounds_task()
    assert out == {str(round_in_labels.pk): "training"}  # labels done; training waits
    assert Round.objects.get(pk=done.pk).stage == Round.Stage.JOBS
