"""Assignment invariants, including under real concurrency on PostgreSQL.

Each thread gets its own database connection (Django connections are per thread), so the
row locks and SKIP LOCKED are exercised for real.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone

from ratings import services
from ratings.models import Assignment, Judgment, Pair, Rater
from ratings.services import assignment

from .factories import add_pairs, make_campaign, make_images

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="concurrency tests need PostgreSQL (DATABASE_URL)"),
    pytest.mark.rating_paths(),  # services called directly: the toggle never reaches them
]



def make_raters(campaign, n, prefix="r"):
    return [
        Rater.objects.create(campaign=campaign, source="prolific", external_id=f"{prefix}{i}",
                             qualified=True, consented_at=timezone.now())
        for i in range(n)
    ]


def run_threads(n: int, target) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def assert_invariants(campaign):
    k = campaign.judgments_per_pair
    # No rater twice on a pair (among non-expired assignments, i.e. holds and judgments).
    dup = (
        Assignment.objects.filter(campaign=campaign).exclude(state="expired")
        .values("rater", "pair").annotate(n=Count("pk")).filter(n__gt=1)
    )
    assert not dup.exists()
    assert not Judgment.objects.filter(campaign=campaign).values("rater", "pair").annotate(
        n=Count("pk")).filter(n__gt=1).exists()
    for pair in Pair.objects.filter(campaign=campaign, kind="deid"):
        live = Assignment.objects.filter(pair=pair, state="issued").count()
        judged = Judgment.objects.filter(pair=pair, rater__blocked=False).count()
        assert judged + live <= k, (pair.pk, judged, live)
        assert pair.taken == judged + live, (pair.pk, pair.taken, judged, live)


@pytest.mark.django_db(transaction=True)
def test_burst_of_next_requests_never_exceeds_k():
    campaign = make_campaign(judgments_per_pair=2)
    add_pairs(campaign, 5, images=make_images(10))
    raters = make_raters(campaign, 24)
    got: dict[int, list[int]] = {}

    def ask(i):
        res = services.next_assignments(raters[i].pk, holds=1)
        got[i] = [a.pair_id for a in res.assignments]

    assert run_threads(len(raters), ask) == []
    issued = Counter(pid for pids in got.values() for pid in pids)
    assert sum(issued.values()) == 10  # 5 pairs x k=2: every slot filled, none twice
    assert max(issued.values()) == 2
    assert_invariants(campaign)


@pytest.mark.django_db(transaction=True)
def test_many_raters_judging_at_once_fill_every_pair_exactly_k():
    campaign = make_campaign(judgments_per_pair=3)
    add_pairs(campaign, 12, images=make_images(8))
    raters = make_raters(campaign, 16)

    def work(i):
        # Half the raters ask separately, half take the next holds with their submission.
        res = services.next_assignments(raters[i].pk, holds=2)
        retries = 5
        for _ in range(60):
            if res.status == "no_work" and retries:
                # SKIP LOCKED passes over pairs another transaction holds at that instant
                # (e.g. a label update on the worker); a rater's page asks again.
                retries -= 1
                time.sleep(0.05)
                res = services.next_assignments(raters[i].pk, holds=2)
                continue
            if res.status != "ok":
                return
            a = res.assignments[0]
            out = services.submit_judgment(
                raters[i].pk, a.public_id, same=bool(i % 2), confidence=3, response_ms=1500,
                then_next=2 if i % 2 else 0, campaign_id=campaign.pk)
            res = out.next if i % 2 else services.next_assignments(raters[i].pk, holds=2)

    assert run_threads(len(raters), work) == []
    counts = Counter(Judgment.objects.filter(campaign=campaign).values_list("pair_id", flat=True))
    assert len(counts) == 12 and set(counts.values()) == {3}
    assert not Assignment.objects.filter(campaign=campaign, state="issued").exists()
    assert_invariants(campaign)


@pytest.mark.django_db(transaction=True)
def test_same_rater_in_two_tabs_gets_one_set_of_holds():
    campaign = make_campaign(judgments_per_pair=5)
    add_pairs(campaign, 10, images=make_images(4))
    (rater,) = make_raters(campaign, 1)
    assert run_threads(8, lambda i: services.next_assignments(rater.pk, holds=2)) == []
    assert Assignment.objects.filter(rater=rater, state="issued").count() == 2
    assert_invariants(campaign)


@pytest.mark.django_db(transaction=True)
def test_expired_holds_are_reclaimed_concurrently():
    campaign = make_campaign(judgments_per_pair=1, hold_timeout_s=60)
    add_pairs(campaign, 4, images=make_images(4))
    first = make_raters(campaign, 4, prefix="early")
    for r in first:
        assert services.next_assignments(r.pk, holds=1).status == "ok"
    later = make_raters(campaign, 8, prefix="late")
    assert services.next_assignments(later[0].pk, holds=1).status == "no_work"
    future = timezone.now() + timedelta(seconds=61)

    got = {}

    def ask(i):
        got[i] = services.next_assignments(later[i].pk, holds=1, now=future).assignments

    assert run_threads(len(later), ask) == []
    assert sum(len(v) for v in got.values()) == 4
    assert Assignment.objects.filter(campaign=campaign, state="expired").count() == 4
    # The early raters' late answers are refused.
    a = Assignment.objects.filter(rater=first[0]).first()
    with pytest.raises(services.RatingError) as err:
        services.submit_judgment(first[0].pk, a.public_id, same=True, confidence=2,
                                 response_ms=900, now=future)
    assert err.value.code == "expired" and err.value.status == 409
    assert_invariants(campaign)


@pytest.mark.django_db
def test_never_the_same_pair_twice_and_order_is_random():
    campaign = make_campaign(judgments_per_pair=50)
    add_pairs(campaign, 40, images=make_images(6))
    (rater,) = make_raters(campaign, 1)
    seen, lefts = [], []
    while (res := services.next_assignments(rater.pk, holds=1)).status == "ok":
        a = res.assignments[0]
        seen.append(a.pair_id)
        lefts.append(a.left_is_a)
        services.submit_judgment(rater.pk, a.public_id, same=True, confidence=4, response_ms=999)
    assert len(seen) == 40 and len(set(seen)) == 40
    assert 5 < sum(lefts) < 35  # both orders occur
    assert res.status == "finished"


@pytest.mark.django_db
def test_own_expired_hold_comes_back_after_timeout():
    campaign = make_campaign(judgments_per_pair=1, hold_timeout_s=30)
    add_pairs(campaign, 1, images=make_images(2))
    (rater,) = make_raters(campaign, 1)
    a1 = services.next_assignments(rater.pk, holds=1).assignments[0]
    later = timezone.now() + timedelta(seconds=31)
    a2 = services.next_assignments(rater.pk, holds=1, now=later).assignments[0]
    assert a2.pk != a1.pk and a2.pair_id == a1.pair_id
    a1.refresh_from_db()
    assert a1.state == "expired"
    assert Pair.objects.get().taken == 1


@pytest.mark.django_db
def test_qualification_comes_first_then_checks_are_mixed_in():
    campaign = make_campaign(qualification_size=3, gold_rate=0.3, attention_rate=0.2,
                             judgments_per_pair=1, pass_mark=0.6)
    imgs = make_images(8)
    add_pairs(campaign, 3, kind="gold_same", images=imgs[:2])
    add_pairs(campaign, 3, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 3, kind="attention", images=imgs[4:6])
    add_pairs(campaign, 30, images=imgs)
    rater = Rater.objects.create(campaign=campaign, source="mturk", external_id="w1")
    kinds, phases = [], []
    while (res := services.next_assignments(rater.pk, holds=2)).status == "ok":
        a = res.assignments[0]
        if len(phases) < 3:
            assert all(x.phase == "qualification" for x in res.assignments)
        kinds.append(a.pair.kind)
        phases.append(a.phase)
        answer = a.pair.expected_same if a.pair.expected_same is not None else True
        services.submit_judgment(rater.pk, a.public_id, same=answer, confidence=3,
                                 response_ms=1200)
    assert all(k.startswith("gold") for k in kinds[:3]) and phases[:3] == ["qualification"] * 3
    assert "attention" in kinds[3:] and kinds.count("deid") == 30
    rater.refresh_from_db()
    assert rater.qualified and not rater.blocked


@pytest.mark.django_db
def test_own_overdue_hold_expires_even_when_campaign_reclaim_is_throttled():
    campaign = make_campaign(judgments_per_pair=2, hold_timeout_s=30)
    add_pairs(campaign, 2, images=make_images(2))
    (rater,) = make_raters(campaign, 1)
    first = services.next_assignments(rater.pk, holds=1).assignments[0]
    later = timezone.now() + timedelta(seconds=31)
    assignment._last_reclaim[campaign.pk] = later  # as if another request just found nothing due
    res = services.next_assignments(rater.pk, holds=1, now=later)
    first.refresh_from_db()
    assert first.state == "expired" and res.status == "ok"
    assert_invariants(campaign)
