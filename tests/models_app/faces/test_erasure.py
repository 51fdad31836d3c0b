"""Erasure leaves no residue (issue 12, defect 8): a subject's erasure and an image's
deletion take images, outputs, jobs, pairs, judgments, labels, files, the subject row and
snapshot ids along, give raters' counters back, and keep an audit record that holds
nothing about the person."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from deidplatform.permissions import DATA_STEWARD, OPERATOR
from models_app.faces.erasure import subject_hash
from models_app.models import DeidJob, ErasureRecord, FaceImage, Subject, TrainingRun
from ratings.models import Assignment, Judgment, Pair, PairLabel, Rater
from tests.conftest import staff_user
from tests.ratings.factories import make_campaign, make_image


def _judge(camp, rater: Rater, pair: Pair, *, correct=None) -> None:
    now = timezone.now()
    a = Assignment.objects.create(campaign=camp, rater=rater, pair=pair, issued=now,
                                  expires=now, state=Assignment.State.SUBMITTED)
    Judgment.objects.create(assignment=a, campaign=camp, rater=rater, pair=pair, same=True,
                            confidence=3, response_ms=900, left_image=pair.image_a,
                            correct=correct)


@pytest.fixture
def world(db):
    """A subject with two photos, an output of one (by a job), pairs judged by a rater who
    also judged an unrelated pair, and a training run whose snapshot names them all."""
    subject = Subject.objects.create(label="Jane Doe")
    src, src2 = make_image(), make_image()
    FaceImage.objects.filter(pk__in=[src.pk, src2.pk]).update(subject=subject)
    out = make_image()
    FaceImage.objects.filter(pk=out.pk).update(kind="output", parent=src)
    job = DeidJob.objects.create(source=src, status="succeeded")
    other_a, other_b = make_image(), make_image()
    camp = make_campaign()
    deid = Pair.objects.create(campaign=camp, image_a=src, image_b=out, kind="deid")
    gold = Pair.objects.create(campaign=camp, image_a=src2, image_b=other_a, kind="gold_different",
                               expected_same=False)
    keep = Pair.objects.create(campaign=camp, image_a=other_a, image_b=other_b, kind="deid")
    rater = camp.raters.create(external_id="p1", source="prolific")
    _judge(camp, rater, deid)
    _judge(camp, rater, gold, correct=False)
    _judge(camp, rater, keep)
    Rater.objects.filter(pk=rater.pk).update(judgments_count=3, gold_count=1, gold_correct=0)
    PairLabel.objects.create(pair=deid, score_a=1.0, same=True, n_judgments=1,
                             method="majority_vote")
    sid = str(subject.pk)

    def rec(a, b, sa, sb):
        return {"a": str(a.pk), "b": str(b.pk), "subject_a": sa, "subject_b": sb,
                "target": 1.0, "weight": 1.0, "natural": False, "pair_id": ""}

    run = TrainingRun.objects.create(status="succeeded", data_snapshot={
        "pairs": [rec(src, out, sid, sid), rec(src2, other_a, sid, f"image:{other_a.pk}"),
                  rec(other_a, other_b, f"image:{other_a.pk}", f"image:{other_b.pk}")],
        "split": {"train": [sid, f"image:{other_a.pk}"], "val": [], "test": [f"image:{other_b.pk}"]},
        "n_pairs": 3,
    })
    files = [Path(f.path) for img in (src, src2, out) for f in (img.file, img.chip)]
    return dict(subject=subject, src=src, src2=src2, out=out, job=job, camp=camp, keep=keep,
                rater=rater, run=run, files=files, other=(other_a, other_b))


def _steward_client(django_user_model, role=DATA_STEWARD) -> Client:
    client = Client()
    client.force_login(staff_user(django_user_model, "steward", role))
    return client


@pytest.mark.django_db
def test_subject_erasure_leaves_no_residue(world, django_user_model, django_capture_on_commit_callbacks):
    w = world
    client = _steward_client(django_user_model)
    with django_capture_on_commit_callbacks(execute=True):
        r = client.delete(f"/api/subjects/{w['subject'].pk}/")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["kind"] == "subject"
    assert body["counts"] == {"images": 2, "outputs": 1, "pairs": 2, "judgments": 2, "labels": 1,
                              "jobs": 1, "subjects": 1, "training_runs_scrubbed": 1}
    # Rows: nothing of the subject's is left; the unrelated pair and its judgment stay.
    assert not Subject.objects.exists()
    assert set(FaceImage.objects.values_list("pk", flat=True)) == {i.pk for i in w["other"]}
    assert not DeidJob.objects.exists() and not PairLabel.objects.exists()
    assert list(Pair.objects.values_list("pk", flat=True)) == [w["keep"].pk]
    assert Judgment.objects.count() == 1
    # Files are gone from disk.
    assert not any(p.exists() for p in w["files"])
    # Counters follow the rows (3 judgments, 1 gold; 1 judgment left, no gold).
    rater = Rater.objects.get(pk=w["rater"].pk)
    assert (rater.judgments_count, rater.gold_count, rater.gold_correct) == (1, 0, 0)
    # The snapshot names none of the erased ids.
    snap = TrainingRun.objects.get(pk=w["run"].pk).data_snapshot
    text = json.dumps(snap)
    for gone in (w["subject"].pk, w["src"].pk, w["src2"].pk, w["out"].pk):
        assert str(gone) not in text
    assert len(snap["pairs"]) == 1 and snap["erased_pairs"] == 2
    assert snap["split"]["train"] == [f"image:{w['other'][0].pk}"]
    # The audit: who and how much, a salted hash of the id, nothing about the person.
    record = ErasureRecord.objects.get()
    assert record.actor_name == "steward" and record.subject_hash == subject_hash(w["subject"].pk)
    stored = json.dumps([record.subject_hash, record.counts, record.actor_name, record.kind])
    assert "Jane" not in stored and str(w["subject"].pk) not in stored
    assert w["subject"].pk.hex not in stored


@pytest.mark.django_db
def test_operator_may_not_erase_a_subject(world, django_user_model):
    client = _steward_client(django_user_model, role=OPERATOR)
    assert client.delete(f"/api/subjects/{world['subject'].pk}/").status_code == 403
    assert Subject.objects.filter(pk=world["subject"].pk).exists()


@pytest.mark.django_db
def test_erasing_an_unknown_subject_is_404(django_user_model):
    client = _steward_client(django_user_model)
    r = client.delete("/api/subjects/00000000-0000-0000-0000-000000000000/")
    assert r.status_code == 404 and r["content-type"] == "application/json"


@pytest.mark.django_db
def test_image_deletion_gives_back_counters_scrubs_snapshots_and_drops_the_empty_subject(
    world, staff_client
):
    w = world
    r = staff_client.delete(f"/api/images/{w['src'].pk}/")
    assert r.status_code == 204
    rater = Rater.objects.get(pk=w["rater"].pk)
    assert rater.judgments_count == 2  # the deid pair's judgment went
    snap = TrainingRun.objects.get(pk=w["run"].pk).data_snapshot
    assert str(w["src"].pk) not in json.dumps(snap) and str(w["out"].pk) not in json.dumps(snap)
    assert Subject.objects.filter(pk=w["subject"].pk).exists()  # src2 is still theirs
    r = staff_client.delete(f"/api/images/{w['src2'].pk}/")
    assert r.status_code == 204
    assert not Subject.objects.exists()  # no residue: the subject had no image left
    rater.refresh_from_db()
    assert (rater.judgments_count, rater.gold_count) == (1, 0)
    assert ErasureRecord.objects.filter(kind="image").count() == 2
