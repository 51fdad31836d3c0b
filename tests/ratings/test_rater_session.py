"""The rater's session from link to completion code (issue 14), on both rating paths:
progress in two phases, the completion code's minimum of real pairs, too-fast answers,
screen-out and return, and which image of a face raters are served."""

from __future__ import annotations

import io

import pytest
from django.utils import timezone
from PIL import Image

from ratings import aggregation, services
from ratings.models import Assignment, Campaign, Judgment, Pair, Rater

from .factories import add_pairs, make_campaign, make_face, make_images
from .test_api import next_, open_page, post, submit

pytestmark = pytest.mark.django_db


def answer(pair: Pair) -> bool:
    return True if pair.expected_same is None else pair.expected_same


def judge(client, campaign: Campaign, item: dict, **body) -> dict:
    """Answer one assignment of a next/submit reply correctly; the submission's reply."""
    pair = Assignment.objects.select_related("pair").get(public_id=item["id"]).pair
    r = submit(client, campaign, item["id"], same=answer(pair), **body)
    assert r.status_code == 201, r.content
    return r.json()


# --- 1. Progress tells the truth ------------------------------------------------------------


def test_progress_shows_qualification_then_work_each_with_its_own_count(rater_client):
    campaign = make_campaign(qualification_size=2, pass_mark=1.0, min_work_pairs=3,
                             judgments_per_pair=1)
    imgs = make_images(6)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 5, images=imgs)
    alice = rater_client(campaign, "PHASES1")
    open_page(alice, campaign)
    body = next_(alice, campaign).json()
    p = body["progress"]
    assert (p["phase"], p["done"], p["target"]) == ("qualification", 0, 2)
    assert (p["work_done"], p["work_min"], p["work_target"]) == (0, 3, 5)
    out = judge(alice, campaign, body["assignments"][0])
    assert (out["progress"]["phase"], out["progress"]["done"], out["progress"]["target"]) == (
        "qualification", 1, 2)
    out = judge(alice, campaign, body["assignments"][1])
    # Qualified: the work phase starts at 0 of its own target, not "2 of 2" with a full bar.
    p = out["progress"]
    assert (p["phase"], p["done"], p["target"], p["qualification_done"]) == ("work", 0, 5, 2)
    nxt = out["next"]
    assert nxt["status"] == "ok" and nxt["progress"] == p
    targets = []
    for _ in range(5):
        out = judge(alice, campaign, nxt["assignments"][0])
        targets.append((out["progress"]["done"], out["progress"]["target"]))
        nxt = out["next"]
        if nxt["status"] != "ok":
            break
    # The bar is full only when no more real pairs will come.
    assert targets == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert nxt["status"] == "finished"


def test_progress_with_a_quota_counts_real_pairs_against_what_the_quota_leaves(rater_client):
    campaign = make_campaign(rater_quota=4, min_work_pairs=2, judgments_per_pair=1)
    add_pairs(campaign, 10, images=make_images(6))
    alice = rater_client(campaign, "QUOTA1")
    open_page(alice, campaign)
    p = next_(alice, campaign).json()["progress"]
    assert (p["phase"], p["work_min"], p["work_target"]) == ("work", 2, 4)


# --- 2. The completion code means work was done ---------------------------------------------


def test_no_code_for_gold_pairs_only_until_the_minimum_of_real_pairs(rater_client):
    """The reported case: every judgment a known-answer pair. No code for that; the rule is
    on the page; once real pairs are judged up to the minimum, the code."""
    campaign = make_campaign(gold_rate=1.0, min_work_pairs=2, judgments_per_pair=1,
                             consent_text="I agree.")
    imgs = make_images(6)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    deid = add_pairs(campaign, 2, images=imgs)
    Pair.objects.filter(pk__in=[p.pk for p in deid]).update(taken=1)  # others hold them
    alice = rater_client(campaign, "GOLDONLY", consent=False)
    consent_page = open_page(alice, campaign)
    assert 'id="rule-min">2<' in consent_page  # the rule, stated before the start
    alice.post(f"/rate/{campaign.slug}/consent", HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value)
    body = next_(alice, campaign).json()
    assert [Assignment.objects.get(public_id=a["id"]).pair.kind in Pair.GOLD_KINDS
            for a in body["assignments"]] == [True, True]
    judge(alice, campaign, body["assignments"][0])
    out = judge(alice, campaign, body["assignments"][1])
    assert out["next"]["status"] == "no_work"  # was "finished": a code for gold pairs only
    assert next_(alice, campaign).json()["status"] == "no_work"
    page = alice.get(f"/rate/{campaign.slug}/done").content.decode()
    assert campaign.completion_code not in page and 'id="code-not-yet"' in page
    assert Rater.objects.get(pk=alice.rater.pk).finished_at is None
    # The other raters' holds lapse: real pairs for Alice, and then the code.
    Pair.objects.filter(pk__in=[p.pk for p in deid]).update(taken=0)
    body = next_(alice, campaign).json()
    assert body["status"] == "ok" and len(body["assignments"]) == 2
    judge(alice, campaign, body["assignments"][0])
    out = judge(alice, campaign, body["assignments"][1])
    assert out["next"]["status"] == "finished" and out["progress"]["work_done"] == 2
    page = alice.get(f"/rate/{campaign.slug}/done").content.decode()
    assert campaign.completion_code in page


def test_a_quota_does_not_end_the_session_before_the_minimum(rater_client):
    campaign = make_campaign(gold_rate=1.0, rater_quota=2, min_work_pairs=2, judgments_per_pair=1)
    imgs = make_images(6)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 3, images=imgs)
    alice = rater_client(campaign, "QUOTA2")
    open_page(alice, campaign)
    nxt = next_(alice, campaign).json()
    kinds = []
    while nxt["status"] == "ok":
        item = nxt["assignments"][0]
        kinds.append(Assignment.objects.get(public_id=item["id"]).pair.kind)
        nxt = judge(alice, campaign, item)["next"]
    # The quota (2) was reached by the gold pairs; the code still needed 2 real pairs.
    assert sorted(kinds[:2]) == ["gold_different", "gold_same"]
    assert kinds[2:] == ["deid"] * 2 and nxt["status"] == "finished"


def test_the_minimum_is_capped_at_the_pairs_that_exist(rater_client):
    campaign = make_campaign(min_work_pairs=10, judgments_per_pair=1)
    add_pairs(campaign, 2, images=make_images(4))
    alice = rater_client(campaign, "CAP1")
    open_page(alice, campaign)
    nxt = next_(alice, campaign).json()
    assert nxt["progress"]["work_min"] == 2
    for _ in range(2):
        nxt = judge(alice, campaign, nxt["assignments"][0])["next"]
    assert nxt["status"] == "finished"


def test_finishing_early_needs_the_minimum_and_hands_the_holds_back(rater_client):
    campaign = make_campaign(min_work_pairs=2, judgments_per_pair=1)
    add_pairs(campaign, 6, images=make_images(6))
    alice = rater_client(campaign, "EARLY1")
    open_page(alice, campaign)
    nxt = next_(alice, campaign).json()
    nxt = judge(alice, campaign, nxt["assignments"][0])["next"]
    r = alice.get(f"/rate/{campaign.slug}/done")  # 1 of 2: back to work, no code
    assert r.status_code == 302 and r["Location"] == f"/rate/{campaign.slug}/"
    nxt = judge(alice, campaign, nxt["assignments"][0])["next"]
    held = [a["id"] for a in nxt["assignments"]]
    assert len(held) == 2
    page = alice.get(f"/rate/{campaign.slug}/done").content.decode()
    assert campaign.completion_code in page
    assert set(Assignment.objects.filter(public_id__in=held).values_list("state", flat=True)) == {
        "expired"}
    assert Pair.objects.filter(campaign=campaign, taken=1).count() == 2  # only the judged ones
    assert next_(alice, campaign).json()["status"] == "finished"


# --- 3. Too-fast answers are caught ---------------------------------------------------------


def test_too_fast_answers_are_flagged_counted_and_told(rater_client):
    campaign = make_campaign(min_response_ms=1500, judgments_per_pair=1)
    add_pairs(campaign, 4, images=make_images(4))
    alice = rater_client(campaign, "FAST1")
    open_page(alice, campaign)
    nxt = next_(alice, campaign).json()
    fast = judge(alice, campaign, nxt["assignments"][0], response_ms=400)
    assert fast["too_fast"] is True
    slow = judge(alice, campaign, fast["next"]["assignments"][0], response_ms=2500)
    assert slow["too_fast"] is False
    assert list(Judgment.objects.filter(rater=alice.rater).order_by("pk")
                .values_list("too_fast", flat=True)) == [True, False]
    assert Rater.objects.get(pk=alice.rater.pk).too_fast_count == 1
    assert Campaign._meta.get_field("min_response_ms").default == 700


def test_pace_adjusted_reliability_takes_too_fast_answers_as_guesses():
    assert aggregation.pace_adjusted(0.9, 10, 0) == 0.9
    assert aggregation.pace_adjusted(0.9, 10, 5) == pytest.approx(0.7)
    assert aggregation.pace_adjusted(0.9, 10, 10) == pytest.approx(0.5)
    assert aggregation.pace_adjusted(0.3, 10, 5) == pytest.approx(0.3)  # never raised
    assert aggregation.pace_adjusted(None, 10, 5) is None


@pytest.mark.rating_paths()
def test_too_fast_answers_lower_the_raters_reliability():
    """Two raters give the same answers on the same pairs; one gave half of them too fast:
    their reliability after the label update is lower."""
    campaign = make_campaign(judgments_per_pair=3, min_response_ms=1000)
    pairs = add_pairs(campaign, 6, images=make_images(6))
    raters = [services.get_or_create_rater(campaign, source="prolific", external_id=f"R{i}")
              for i in range(3)]
    truth = [True, False, True, False, True, False]
    for i, rater in enumerate(raters):
        for pair, same in zip(pairs, truth, strict=True):
            nxt = services.next_assignments(rater.pk, holds=1)
            a = nxt.assignments[0]
            assert a.pair_id == pair.pk
            ms = 300 if (i == 1 and pair.pk % 2) else 2000
            services.submit_judgment(rater.pk, a.public_id, same=same, confidence=3,
                                     response_ms=ms)
    services.recompute_labels(campaign.pk)
    r0, r1, r2 = (Rater.objects.get(pk=r.pk) for r in raters)
    assert r1.too_fast_count == 3
    assert r0.reliability == pytest.approx(r2.reliability)
    assert r1.reliability < r0.reliability


# --- 4. Screen-out and return ---------------------------------------------------------------

RETURN_URL = "https://app.prolific.com/submissions/complete?cc=SCRN42"


def test_declining_consent_screens_out_with_code_and_return_url(rater_client):
    campaign = make_campaign(consent_text="I agree.", screenout_code="SCRN42",
                             return_url=RETURN_URL)
    add_pairs(campaign, 2, images=make_images(4))
    alice = rater_client(campaign, "DECL1", consent=False)
    page = open_page(alice, campaign)
    assert f'action="/rate/{campaign.slug}/decline"' in page and 'id="decline"' in page
    r = alice.post(f"/rate/{campaign.slug}/decline",
                   HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value)
    assert r.status_code == 302
    page = open_page(alice, campaign)
    assert 'id="declined"' in page and "SCRN42" in page
    assert f'href="{RETURN_URL.replace("&", "&amp;")}"' in page and 'http-equiv="refresh"' in page
    assert Rater.objects.get(pk=alice.rater.pk).declined_at is not None
    # No way in after declining: no pairs on either path, and a later "agree" is ignored.
    r = next_(alice, campaign)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "consent_required"
    alice.post(f"/rate/{campaign.slug}/consent", HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value)
    assert Rater.objects.get(pk=alice.rater.pk).consented_at is None
    assert 'id="declined"' in open_page(alice, campaign)
    # Even if the campaign drops its consent text later, a decline stays a decline.
    Campaign.objects.filter(pk=campaign.pk).update(consent_text="")
    r = next_(alice, campaign)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "consent_required"
    assert 'id="declined"' in open_page(alice, campaign)
    assert not Assignment.objects.filter(rater=alice.rater).exists()


def test_a_blocked_participant_gets_the_screenout_code_and_return_url(rater_client):
    campaign = make_campaign(attention_rate=1.0, screenout_code="SCRN42", return_url=RETURN_URL)
    imgs = make_images(4)
    add_pairs(campaign, 1, kind="attention", images=imgs[:2])
    add_pairs(campaign, 2, images=imgs)
    alice = rater_client(campaign, "BLOCK1")
    open_page(alice, campaign)
    a = next_(alice, campaign).json()["assignments"][0]
    out = submit(alice, campaign, a["id"], same=False).json()  # wrong: the images are identical
    assert out["rater_status"] == "blocked"
    page = alice.get(f"/rate/{campaign.slug}/").content.decode()
    assert 'id="blocked"' in page and "SCRN42" in page and 'id="return-link"' in page
    # Without a code or URL: the polite page, as before.
    plain = make_campaign(attention_rate=1.0)
    add_pairs(plain, 1, kind="attention", images=imgs[:2])
    bob = rater_client(plain, "BLOCK2")
    open_page(bob, plain)
    a = next_(bob, plain).json()["assignments"][0]
    submit(bob, plain, a["id"], same=False)
    page = bob.get(f"/rate/{plain.slug}/").content.decode()
    assert 'id="blocked"' in page and 'id="screenout-code"' not in page
    assert 'id="return-link"' not in page


def test_campaign_api_takes_the_new_settings(staff_client):
    r = post(staff_client, "/api/ratings/campaigns/", {
        "name": "S", "slug": "s-session", "min_work_pairs": 20, "screenout_code": "NOPE1",
        "return_url": RETURN_URL, "rater_image": "context",
    }, token=False)
    assert r.status_code == 201, r.content
    c = Campaign.objects.get(slug="s-session")
    assert (c.min_work_pairs, c.screenout_code, c.return_url, c.rater_image) == (
        20, "NOPE1", RETURN_URL, "context")
    r = post(staff_client, "/api/ratings/campaigns/", {
        "name": "T", "slug": "t-session", "rater_image": "thumbnail"}, token=False)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "rater_image"
    assert Campaign._meta.get_field("rater_image").default == "photo"


# --- 5. What raters see ---------------------------------------------------------------------


def _served_sizes(client, item: dict) -> list[tuple[int, int]]:
    sizes = []
    for url in (item["left_url"], item["right_url"]):
        r = client.get(url)
        assert r.status_code == 200 and r["Content-Type"] == "image/png"
        assert r["Cache-Control"] == "private, max-age=120"
        body = b"".join(r.streaming_content) if r.streaming else r.content
        sizes.append(Image.open(io.BytesIO(body)).size)
    return sizes


@pytest.mark.parametrize("shown,size", [("photo", (160, 120)), ("context", (300, 300)),
                                        ("chip", (48, 48))])
def test_the_campaign_chooses_what_raters_see_at_native_size(rater_client, shown, size):
    campaign = make_campaign(rater_image=shown, judgments_per_pair=1)
    add_pairs(campaign, 1, images=[make_face(1), make_face(2)])
    alice = rater_client(campaign, f"IMG{shown}")
    open_page(alice, campaign)
    item = next_(alice, campaign).json()["assignments"][0]
    assert _served_sizes(alice, item) == [size, size]
    assert str(campaign.pairs.first().image_a_id) not in item["left_url"]  # opaque
    # Still permission-checked: another participant's session gets nothing.
    bob = rater_client(campaign, f"IMGB{shown}")
    assert bob.get(item["left_url"]).status_code == 404


def test_context_falls_back_to_the_photo_without_a_stored_detection(rater_client):
    campaign = make_campaign(rater_image="context", judgments_per_pair=1)
    add_pairs(campaign, 1, images=make_images(2))  # 24 px photos, no landmarks
    alice = rater_client(campaign, "IMGFALL")
    open_page(alice, campaign)
    item = next_(alice, campaign).json()["assignments"][0]
    assert _served_sizes(alice, item) == [(24, 24), (24, 24)]


def test_decline_is_post_only_and_needs_the_session(rater_client, client):
    campaign = make_campaign(consent_text="I agree.")
    assert client.post(f"/rate/{campaign.slug}/decline").status_code == 403
    alice = rater_client(campaign, "DECL2", consent=False)
    open_page(alice, campaign)
    assert alice.get(f"/rate/{campaign.slug}/decline").status_code == 405
    assert Rater.objects.get(pk=alice.rater.pk).declined_at is None
    # Someone who already consented keeps their consent (the button is on the consent page).
    Rater.objects.filter(pk=alice.rater.pk).update(consented_at=timezone.now())
    alice.post(f"/rate/{campaign.slug}/decline", HTTP_X_CSRFTOKEN=alice.cookies["csrftoken"].value)
    assert Rater.objects.get(pk=alice.rater.pk).declined_at is None
