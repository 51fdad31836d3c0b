"""Aggregation: the pure module on a synthetic crowd, the label service, the real worker."""

from __future__ import annotations

import csv
import io
import json

import krippendorff
import numpy as np
import pytest
from django.utils import timezone

from ratings import aggregation, services
from ratings.models import Campaign, Judgment, PairLabel, Rater
from tests.helpers import wait_for

from .factories import add_pairs, make_campaign, make_images

pytestmark = pytest.mark.rating_paths()  # no rater endpoint here: one run


def test_dawid_skene_beats_majority_vote_with_spammers():
    wins = 0
    for seed in range(3):
        rows, truth = aggregation.synthetic_crowd(n_pairs=300, n_good=8, n_spammers=7, k=5,
                                                  seed=seed)
        ds = aggregation.aggregate(rows, aggregation.DAWID_SKENE)
        mv = aggregation.aggregate(rows, aggregation.MAJORITY_VOTE)
        acc_ds, acc_mv = aggregation.accuracy(ds.score_a, truth), aggregation.accuracy(mv.score_a, truth)
        wins += acc_ds > acc_mv
        assert acc_ds >= 0.75
        good = np.mean([v for w, v in ds.reliability.items() if w.startswith("good")])
        spam = np.mean([v for w, v in ds.reliability.items() if w.startswith("spam")])
        assert good > spam + 0.15
    assert wins == 3


def test_scores_are_probabilities_and_alpha_matches_krippendorff():
    rows = [("a", 1, True), ("b", 1, True), ("c", 1, False),
            ("a", 2, False), ("b", 2, False), ("c", 2, False),
            ("a", 3, True), ("b", 3, False)]
    res = aggregation.aggregate(rows, aggregation.MAJORITY_VOTE)
    assert res.score_a[1] == pytest.approx(2 / 3) and res.score_a[2] == 0.0
    matrix = [[1, 0, 1], [1, 0, 0], [0, 0, np.nan]]
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    assert res.alpha == pytest.approx(expected)
    assert aggregation.aggregate([], aggregation.DAWID_SKENE).score_a == {}
    unanimous = aggregation.aggregate([("a", 1, True), ("b", 1, True)], aggregation.DAWID_SKENE)
    assert unanimous.score_a == {1: 1.0} and unanimous.alpha is None


def _crowd_campaign(n_pairs=6, k=3, blocked_liar=True) -> Campaign:
    campaign = make_campaign(judgments_per_pair=k)
    pairs = add_pairs(campaign, n_pairs, images=make_images(6))
    truth = {p.pk: i % 2 == 0 for i, p in enumerate(pairs)}
    raters = [Rater.objects.create(campaign=campaign, source="mturk", external_id=f"w{i}",
                                   qualified=True, consented_at=timezone.now()) for i in range(k)]
    for r in raters:
        while (res := services.next_assignments(r.pk, holds=1)).status == "ok":
            a = res.assignments[0]
            services.submit_judgment(r.pk, a.public_id, same=truth[a.pair_id], confidence=4,
                                     response_ms=1000)
    if blocked_liar:
        liar = Rater.objects.create(campaign=campaign, source="mturk", external_id="liar",
                                    qualified=True, blocked=True, consented_at=timezone.now())
        for p in pairs:
            a = liar.assignments.create(campaign=campaign, pair=p, issued=timezone.now(),
                                        expires=timezone.now(), state="submitted")
            Judgment.objects.create(assignment=a, campaign=campaign, rater=liar, pair=p,
                                    same=not truth[p.pk], confidence=4, response_ms=900,
                                    left_image=p.image_a)
    campaign.truth = truth
    return campaign


@pytest.mark.django_db
def test_recompute_labels_excludes_blocked_raters():
    campaign = _crowd_campaign()
    out = services.recompute_labels(campaign.pk)
    assert out["labels"] == 6
    for label in PairLabel.objects.filter(pair__campaign=campaign):
        assert label.same == campaign.truth[label.pair_id]
        assert label.n_judgments == 3 and label.method == "dawid_skene"
    campaign.refresh_from_db()
    assert campaign.krippendorff_alpha == pytest.approx(1.0)
    assert not campaign.labels_pending and campaign.labels_updated
    assert Rater.objects.get(external_id="liar").reliability is None
    services.recompute_labels(campaign.pk, method="majority_vote")  # updates in place
    assert set(PairLabel.objects.values_list("method", flat=True)) == {"majority_vote"}


@pytest.mark.django_db
def test_exports_round_trip(staff_client):
    campaign = _crowd_campaign(n_pairs=4, k=2)
    services.recompute_labels(campaign.pk)
    base = f"/api/ratings/campaigns/{campaign.pk}/exports"
    r = staff_client.get(f"{base}/judgments/csv/")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv") and r.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    db = list(Judgment.objects.filter(campaign=campaign).order_by("pk"))
    assert [int(x["judgment"]) for x in rows] == [j.pk for j in db]
    assert [x["same"] == "True" for x in rows] == [j.same for j in db]
    assert sum(x["rater_blocked"] == "True" for x in rows) == 4
    r = staff_client.get(f"{base}/judgments/jsonl/")
    lines = [json.loads(x) for x in b"".join(r.streaming_content).decode().splitlines()]
    assert [(x["judgment"], x["same"], x["confidence"], x["response_ms"]) for x in lines] == [
        (j.pk, j.same, j.confidence, j.response_ms) for j in db]
    r = staff_client.get(f"{base}/labels/jsonl/")
    labels = {x["pair"]: x for x in map(json.loads, b"".join(r.streaming_content).decode().splitlines())}
    for pl in PairLabel.objects.filter(pair__campaign=campaign):
        assert labels[pl.pair_id]["score_a"] == pytest.approx(pl.score_a)
    r = staff_client.get(f"{base}/labels/csv/")
    assert len(list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))) == 4
    assert staff_client.get(f"/api/ratings/campaigns/{campaign.pk}/labels/").json()["count"] == 4


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_labels_update_through_the_real_worker(celery_worker_process, staff_client):
    campaign = _crowd_campaign(n_pairs=4, k=2, blocked_liar=False)
    # Submissions queued one debounced task on commit; the worker computes the labels.
    def labelled() -> bool:
        return (PairLabel.objects.filter(pair__campaign=campaign).count() == 4
                and not Campaign.objects.get(pk=campaign.pk).labels_pending)

    try:
        wait_for(labelled, timeout=60, what="the worker's labels")
    except BaseException:
        celery_worker_process.log.seek(0)
        print(celery_worker_process.log.read())
        raise
    PairLabel.objects.all().delete()
    r = staff_client.post(f"/api/ratings/campaigns/{campaign.pk}/recompute/",
                          {"method": "majority_vote"}, content_type="application/json")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    wait_for(lambda: PairLabel.objects.filter(method="majority_vote").count() >= 4,
             timeout=60, what="majority-vote labels")
    assert PairLabel.objects.filter(pair__campaign=campaign, method="majority_vote").count() == 4
