"""Gold pairs: known same (a source against a lightly jittered copy of itself, stored as
an output of the source with its own detection) and known different (two subjects)."""

from __future__ import annotations

import numpy as np
import pytest

from models_app.faces.services import get_or_create_subject, ingest_image
from models_app.models import FaceImage
from ratings.models import Pair
from ratings.services.gold import add_gold_pairs, jitter_image
from tests.ratings.factories import make_campaign

PEOPLE = {"Abdullah_Gul": 2, "Aaron_Peirsol": 2, "Adrien_Brody": 1, "Ai_Sugiyama": 1}


@pytest.fixture
def sources(lfw_dir) -> list[FaceImage]:
    out = []
    for name, n in PEOPLE.items():
        subject = get_or_create_subject(name)
        for f in sorted((lfw_dir / name).glob("*.jpg"))[:n]:
            out.append(ingest_image(f.read_bytes(), subject=subject).image)
    assert all(s is not None and s.status == "ok" for s in out)
    return out


def _key(pairs):
    return [(p.kind, p.image_a_id, p.image_b_id) for p in pairs]


@pytest.mark.django_db
def test_gold_pairs_counts_kinds_copies_and_determinism(sources):
    campaign = make_campaign()
    pairs = add_gold_pairs(campaign, sources, n_same=3, n_different=4, seed=7)
    same = [p for p in pairs if p.kind == "gold_same"]
    diff = [p for p in pairs if p.kind == "gold_different"]
    assert len(same) == 3 and len(diff) == 4 and len(pairs) == 7
    assert Pair.objects.filter(campaign=campaign).count() == 7
    assert all(p.expected_same is True for p in same)
    assert all(p.expected_same is False for p in diff)
    by_pk = {s.pk: s for s in sources}
    for p in same:
        src, copy = by_pk[p.image_a_id], FaceImage.objects.get(pk=p.image_b_id)
        assert copy.pk not in by_pk and copy.parent_id == src.pk and copy.kind == "output"
        assert copy.subject_id == src.subject_id and copy.status == "ok"
        assert copy.sha256 != src.sha256 and copy.file.name != src.file.name
        assert copy.chip and copy.landmarks and copy.box  # detected afresh: its own chip
        # Light: the face found in the copy is where it was, within a few pixels.
        shift = np.abs(np.asarray(copy.landmarks) - np.asarray(src.landmarks)).mean()
        assert 0 < shift < 0.05 * src.width
    assert len({p.image_a_id for p in same}) == 3  # three different sources
    for p in diff:
        assert by_pk[p.image_a_id].subject_id != by_pk[p.image_b_id].subject_id
    assert len({frozenset((p.image_a_id, p.image_b_id)) for p in diff}) == 4
    # Same seed, same sources (in any order): the same choice, the copies stored once.
    n_images = FaceImage.objects.count()
    again = add_gold_pairs(make_campaign(), list(reversed(sources)), n_same=3, n_different=4,
                           seed=7)
    assert _key(again) == _key(pairs) and FaceImage.objects.count() == n_images
    other = add_gold_pairs(make_campaign(), sources, n_same=3, n_different=4, seed=8)
    assert _key(other) != _key(pairs)


def test_jitter_is_light_and_seeded(lfw_dir):
    from PIL import Image

    with Image.open(lfw_dir / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))
    a = jitter_image(rgb, np.random.default_rng(1))
    b = jitter_image(rgb, np.random.default_rng(1))
    assert np.array_equal(a, b) and a.shape == rgb.shape and a.dtype == np.uint8
    assert not np.array_equal(a, rgb)
    assert not np.array_equal(a, jitter_image(rgb, np.random.default_rng(2)))
    gain = a.astype(float).mean() / rgb.astype(float).mean()
    assert 0.9 < gain < 1.1  # a little exposure, no more
    assert a[0].mean() > 5 and a[:, 0].mean() > 5 and a[-1].mean() > 5  # no black border


@pytest.mark.django_db
def test_gold_pairs_api(staff_client, sources):
    campaign = make_campaign()
    url = f"/api/ratings/campaigns/{campaign.pk}/gold-pairs/"
    body = {"n_same": 2, "n_different": 2, "seed": 1, "images": [str(s.pk) for s in sources]}
    r = staff_client.post(url, body, content_type="application/json")
    assert r.status_code == 201, r.content
    assert sorted(p["kind"] for p in r.json()) == ["gold_different"] * 2 + ["gold_same"] * 2
    # One subject only: known-different pairs are impossible, said with the field.
    one = [str(s.pk) for s in sources[:2]]
    r = staff_client.post(url, {"n_different": 1, "images": one}, content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "n_different"
    r = staff_client.post(url, {"n_same": -1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "n_same"
    # Without images: the sources of the campaign's deid pairs.
    Pair.objects.create(campaign=campaign, image_a=sources[0], image_b=sources[1], kind="deid")
    r = staff_client.post(url, {"n_same": 1}, content_type="application/json")
    assert r.status_code == 201 and r.json()[0]["kind"] == "gold_same"
    assert r.json()[0]["image_a"] == str(sources[0].pk)
    assert Pair.objects.filter(campaign=campaign).count() == 6
    # Attention checks on request: a source twice, expected "same".
    r = staff_client.post(url, {"n_attention": 2, "images": [str(s.pk) for s in sources]},
                          content_type="application/json")
    assert r.status_code == 201 and [p["kind"] for p in r.json()] == ["attention"] * 2
    att = Pair.objects.filter(campaign=campaign, kind="attention")
    assert att.count() == 2 and all(p.image_a_id == p.image_b_id and p.expected_same for p in att)
    r = staff_client.post(url, {"n_attention": -1}, content_type="application/json")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "n_attention"


@pytest.mark.django_db
def test_campaign_that_asks_for_qualification_gets_its_known_answer_pairs(staff_client, sources):
    """Saved through the API, or given pairs: the shortfall of gold and attention pairs is
    made from the campaign's own sources; nothing is made twice; a campaign asking for
    none gets none; the admin action does the same and says what it could not make."""
    body = {"name": "Auto gold", "slug": "auto-gold", "qualification_size": 4,
            "gold_rate": 0.1, "attention_rate": 0.05}
    r = staff_client.post("/api/ratings/campaigns/", body, content_type="application/json")
    assert r.status_code == 201, r.content
    cid = r.json()["id"]
    assert Pair.objects.filter(campaign_id=cid).count() == 0  # no sources yet: nothing, no error
    deid = [{"image_a": str(a.pk), "image_b": str(b.pk)}
            for a, b in zip(sources, sources[1:] + sources[:1], strict=True)]
    r = staff_client.post(f"/api/ratings/campaigns/{cid}/pairs/", {"pairs": deid},
                          content_type="application/json")
    assert r.status_code == 201, r.content
    kinds = sorted(Pair.objects.filter(campaign_id=cid).values_list("kind", flat=True))
    # Qualification 4, gold mixed in: a pool of 8 (4 same, 4 different); 4 attention checks.
    assert kinds.count("gold_same") == 4 and kinds.count("gold_different") == 4
    assert kinds.count("attention") == 4 and kinds.count("deid") == 6
    for p in Pair.objects.filter(campaign_id=cid, kind="gold_different"):
        assert p.image_a.subject_id != p.image_b.subject_id
    r = staff_client.patch(f"/api/ratings/campaigns/{cid}/", {
        "status": "active", "instructions": "Judge each pair.", "consent_text": "I agree.",
    }, content_type="application/json")
    assert r.status_code == 200, r.content
    assert Pair.objects.filter(campaign_id=cid).count() == 18  # already complete: none added

    none = make_campaign(qualification_size=0, gold_rate=0.0, attention_rate=0.0)
    Pair.objects.create(campaign=none, image_a=sources[0], image_b=sources[1], kind="deid")
    staff_client.patch(f"/api/ratings/campaigns/{none.pk}/", {"name": "renamed"},
                       content_type="application/json")
    assert Pair.objects.filter(campaign=none).count() == 1

    # One subject's sources: known-same pairs only, and the admin says why.
    one = make_campaign(qualification_size=2, gold_rate=0.0, attention_rate=0.0)
    Pair.objects.create(campaign=one, image_a=sources[0], image_b=sources[1], kind="deid")
    r = staff_client.post("/admin/ratings/campaign/", {
        "action": "make_known_answer_pairs", "_selected_action": [one.pk]}, follow=True)
    assert r.status_code == 200
    text = r.content.decode()
    assert "added 1 gold_same pairs" in text and "at least two subjects" in text
    assert list(Pair.objects.filter(campaign=one).exclude(kind="deid")
                .values_list("kind", flat=True)) == ["gold_same"]
