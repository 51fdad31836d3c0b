"""The PostgreSQL hot path (ratings/hotpath.py + the ``ratings_hot`` function).

Same answers as the reference path (services through the DRF views), the same QC, and the
same invariants under real concurrency; whatever is not the common case falls back to the
reference path with nothing written. The API tests (test_api.py) run through it as well.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ratings import hotpath, services
from ratings.models import Assignment, Campaign, Judgment, Pair, Rater
from ratings.services import assignment

from .factories import add_pairs, make_campaign, make_images
from .test_assignment import assert_invariants, make_raters, run_threads

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="the hot path is PostgreSQL only"),
    pytest.mark.rating_paths("hot"),  # tests of the hot path itself
]


def _csrf(client: Client) -> str:
    return client.cookies["csrftoken"].value


def _post(client: Client, url: str, body: dict | None = None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json",
                       HTTP_X_CSRFTOKEN=_csrf(client))


def _enter(campaign: Campaign, pid: str, qualified: bool = True) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": pid, "STUDY_ID": "S", "SESSION_ID": "X"})
    Rater.objects.filter(campaign=campaign, external_id=pid).update(
        consented_at=timezone.now(), qualified=qualified)
    assert client.get(f"/rate/{campaign.slug}/").status_code == 200
    client.rater = Rater.objects.get(campaign=campaign, external_id=pid)
    return client


def _next(client: Client, campaign: Campaign):
    return _post(client, f"/api/ratings/rate/{campaign.slug}/next")


def _submit(client: Client, campaign: Campaign, assignment_id: str, **body):
    payload = {"same": True, "confidence": 3, "response_ms": 1500, **body}
    return _post(client, f"/api/ratings/rate/{campaign.slug}/assignments/{assignment_id}/judgment",
                 payload)


@pytest.fixture
def no_reference_submit(monkeypatch):
    """Fail if a submission reaches the Python service (i.e. the hot path fell back)."""

    def refuse(*args, **kwargs):
        raise AssertionError("services.submit_judgment called: the hot path fell back")

    monkeypatch.setattr(services, "submit_judgment", refuse)


def _shape(value):
    """Keys and types, recursively (values differ between two runs)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.mark.django_db
def test_hot_path_answers_exactly_like_the_reference(no_reference_submit):
    campaign = make_campaign(judgments_per_pair=2)
    add_pairs(campaign, 6, images=make_images(6))
    alice = _enter(campaign, "ALICE")
    first = _next(alice, campaign)
    assert first.status_code == 200
    a = first.json()["assignments"][0]
    assignment._last_reclaim[campaign.pk] = timezone.now()  # reclaim just ran (throttled)
    with CaptureQueriesContext(connection) as queries:
        hot = _submit(alice, campaign, a["id"])
    assert hot.status_code == 201, hot.content
    # The session read and one statement: the function.
    assert [q["sql"] for q in queries.captured_queries if "ratings_hot" in q["sql"]]
    assert len(queries.captured_queries) == 2, [q["sql"][:80] for q in queries.captured_queries]
    body = hot.json()
    assert body["status"] == "recorded" and body["rater_status"] == "ok"
    assert body["next"]["status"] == "ok" and len(body["next"]["assignments"]) == 2
    # The held pair stays first; the new one is appended (oldest first).
    assert body["next"]["assignments"][0]["id"] == first.json()["assignments"][1]["id"]
    j = Judgment.objects.get()
    assert (j.same, j.confidence, j.response_ms, j.too_fast) == (True, 3, 1500, False)
    asg = Assignment.objects.get(public_id=a["id"])
    assert asg.state == "submitted" and asg.closed is not None
    assert j.left_image_id == (asg.pair.image_a_id if asg.left_is_a else asg.pair.image_b_id)
    rater = Rater.objects.get(pk=alice.rater.pk)
    assert rater.judgments_count == 1
    assert Campaign.objects.get(pk=campaign.pk).labels_pending

    assert _shape(body)["next"]["assignments"][0] == {
        "id": "str", "phase": "str", "left_url": "str", "right_url": "str", "expires": "str"}


@pytest.mark.django_db
def test_same_json_as_the_drf_path():
    campaign = make_campaign(judgments_per_pair=3, rater_quota=40)
    add_pairs(campaign, 6, images=make_images(6))
    alice, bob = _enter(campaign, "ALICE"), _enter(campaign, "BOB")
    a = _next(alice, campaign).json()["assignments"][0]
    b = _next(bob, campaign).json()["assignments"][0]
    hot = _submit(alice, campaign, a["id"])
    with override_settings(RATINGS_HOT_PATH=False):
        ref = _submit(bob, campaign, b["id"])
    assert hot.status_code == ref.status_code == 201
    hot_body, ref_body = hot.json(), ref.json()
    assert _shape(hot_body) == _shape(ref_body)
    assert hot_body["progress"] == ref_body["progress"]
    assert hot_body["next"]["progress"] == ref_body["next"]["progress"]
    assert hot_body["next"]["end_url"] == ref_body["next"]["end_url"]
    for h in hot_body["next"]["assignments"]:
        asg = Assignment.objects.get(public_id=h["id"])
        assert h["phase"] == asg.phase
        assert h["expires"] == asg.expires.isoformat().replace("+00:00", "Z")
        assert alice.get(h["left_url"]).status_code == 200  # valid signed image URLs
        assert bob.get(h["left_url"]).status_code == 404  # and only for their rater
    for header in ("Content-Type", "Allow"):
        assert hot[header] == ref[header]
    assert set(hot["Vary"].replace(" ", "").split(",")) == set(ref["Vary"].replace(" ", "").split(","))


@pytest.mark.django_db
def test_fallbacks_write_nothing_and_give_the_reference_answers():
    campaign = make_campaign(judgments_per_pair=2)
    add_pairs(campaign, 6, images=make_images(6))
    alice, bob = _enter(campaign, "ALICE"), _enter(campaign, "BOB")
    a = _next(alice, campaign).json()["assignments"][0]
    # Someone else's assignment: 404, nothing written.
    r = _submit(bob, campaign, a["id"])
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "not_found"
    # A payload the fast parser does not take: DRF's validation error.
    r = _submit(alice, campaign, a["id"], confidence="3.5")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "confidence"
    r = _submit(alice, campaign, a["id"], same="yes")  # DRF accepts "yes": same answer
    assert r.status_code == 201 and r.json()["status"] == "recorded"
    r = _submit(alice, campaign, a["id"], same="yes")  # a retry: 200, nothing new
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert Judgment.objects.count() == 1
    # No CSRF token: DRF's JSON 403.
    r = alice.post(f"/api/ratings/rate/{campaign.slug}/next", data="{}",
                   content_type="application/json")
    assert r.status_code == 403 and "CSRF" in r.json()["errors"][0]["detail"]
    # A blocked rater: 403 from the reference path, nothing written.
    services.block_rater(bob.rater.pk)
    assert _next(bob, campaign).status_code == 403
    assert not Judgment.objects.filter(rater=bob.rater).exists()


@pytest.mark.django_db
def test_hot_path_blocks_on_a_failed_attention_check_and_releases_slots(no_reference_submit):
    campaign = make_campaign(judgments_per_pair=2, attention_rate=1.0, gold_rate=0.0)
    imgs = make_images(6)
    add_pairs(campaign, 4, images=imgs)
    add_pairs(campaign, 2, kind=Pair.Kind.ATTENTION, images=imgs)
    alice = _enter(campaign, "ALICE")
    holds = _next(alice, campaign).json()["assignments"]
    kinds = {h["id"]: Assignment.objects.get(public_id=h["id"]).pair.kind for h in holds}
    assert set(kinds.values()) == {"attention"}  # attention_rate = 1: both are checks
    r = _submit(alice, campaign, holds[0]["id"], same=False)  # identical images: wrong
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["rater_status"] == "blocked" and body["next"] is None
    rater = Rater.objects.get(pk=alice.rater.pk)
    assert rater.blocked and rater.blocked_reason == "attention" and rater.attention_failed == 1
    assert rater.slots_released
    assert not Assignment.objects.filter(rater=rater, state="issued").exists()
    assert Judgment.objects.get(rater=rater).correct is False


@pytest.mark.django_db
def test_hot_path_keeps_gold_accuracy(no_reference_submit):
    campaign = make_campaign(judgments_per_pair=2, gold_rate=1.0, pass_mark=0.5)
    imgs = make_images(8)
    add_pairs(campaign, 2, images=imgs)
    add_pairs(campaign, 3, kind=Pair.Kind.GOLD_SAME, images=imgs)
    add_pairs(campaign, 3, kind=Pair.Kind.GOLD_DIFFERENT, images=imgs)
    alice = _enter(campaign, "ALICE")
    nxt = _next(alice, campaign).json()
    answers = []
    while nxt and nxt["status"] == "ok":
        h = nxt["assignments"][0]
        pair = Assignment.objects.get(public_id=h["id"]).pair
        if pair.kind == "deid":
            right = True
        else:
            right = not answers  # right once, then wrong: accuracy 1/2, then 1/3 < 0.5
            answers.append(right)
        r = _submit(alice, campaign, h["id"], same=pair.expected_same if right else
                    not pair.expected_same)
        assert r.status_code == 201, r.content
        nxt = r.json()["next"]
        if r.json()["rater_status"] == "blocked":
            break
    rater = Rater.objects.get(pk=alice.rater.pk)
    assert answers[:3] == [True, False, False]
    assert rater.blocked and rater.blocked_reason == "gold_accuracy"
    assert (rater.gold_count, rater.gold_correct) == (3, 1)


@pytest.mark.django_db
def test_own_overdue_hold_takes_the_python_path_after_recording():
    campaign = make_campaign(judgments_per_pair=2, hold_timeout_s=60)
    add_pairs(campaign, 6, images=make_images(6))
    alice = _enter(campaign, "ALICE")
    a, b = _next(alice, campaign).json()["assignments"]
    Assignment.objects.filter(public_id=b["id"]).update(expires=timezone.now() - timedelta(1))
    r = _submit(alice, campaign, a["id"])
    assert r.status_code == 201
    nxt = r.json()["next"]
    assert nxt["status"] == "ok" and len(nxt["assignments"]) == 2
    assert b["id"] not in {x["id"] for x in nxt["assignments"]}
    assert Assignment.objects.get(public_id=b["id"]).state == "expired"
    assert_invariants(campaign)


@pytest.mark.django_db
def test_function_refuses_nothing_it_should_not_write():
    """Direct calls: unknown rater, wrong slug, draft campaign -> fallback, no rows."""
    campaign = make_campaign()
    add_pairs(campaign, 2, images=make_images(4))
    (rater,) = make_raters(campaign, 1)
    now = timezone.now()
    assert hotpath.call(uuid.uuid4().hex, campaign.slug, None, None, now, 2)["outcome"] == "fallback"
    assert hotpath.call(rater.public_id.hex, "other", None, None, now, 2)["outcome"] == "fallback"
    Campaign.objects.filter(pk=campaign.pk).update(status="draft")
    assert hotpath.call(rater.public_id.hex, campaign.slug, None, None, now, 2)["outcome"] == "fallback"
    assert not Assignment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_many_raters_through_the_function_fill_every_pair_exactly_k():
    """Real concurrency (one connection per thread): k never exceeded, nobody twice on a
    pair, every recorded judgment stored once."""
    campaign = make_campaign(judgments_per_pair=3)
    add_pairs(campaign, 20, images=make_images(10))
    raters = make_raters(campaign, 12)
    recorded: list[str] = []
    lock = threading.Lock()

    def ask(i):
        res = services.next_assignments(raters[i].pk, holds=2)
        return {"next": {"status": res.status, "assignments": [
            {"id": str(a.public_id)} for a in res.assignments]}}

    def work(i):
        r_hex = raters[i].public_id.hex
        out = hotpath.call(r_hex, campaign.slug, None, None, timezone.now(), 2)
        if out["outcome"] != "ok":  # the Python path when every candidate was locked
            out = ask(i)
        for _ in range(100):
            while out["next"] and out["next"]["status"] == "ok":
                a_id = out["next"]["assignments"][0]["id"]
                out = hotpath.call(r_hex, campaign.slug, uuid.UUID(a_id), (True, 2, 900),
                                   timezone.now(), 2)
                assert out["outcome"] in ("ok", "next_fallback"), out
                with lock:
                    recorded.append(a_id)
                if out["outcome"] == "next_fallback":
                    out = ask(i)
            # Out of work while other raters still hold slots they may give back: come
            # back for them, as a person on the page would (the threads all end otherwise).
            if not Assignment.objects.filter(state="issued").exclude(rater=raters[i]).exists():
                return
            time.sleep(0.05)
            out = ask(i)

    assert run_threads(12, work) == []
    assert_invariants(campaign)
    assert sorted(recorded) == sorted(
        str(x) for x in Judgment.objects.values_list("assignment__public_id", flat=True))
    assert Judgment.objects.count() == 20 * 3  # every pair judged exactly k times
    assert not Assignment.objects.filter(state="issued").exists()
    connections.close_all()
