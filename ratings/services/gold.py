"""Gold pairs, with a known answer: a source against a lightly jittered copy of itself
(gold_same) and two sources of different subjects (gold_different).

Kept out of the package's front door (``ratings.services``): it stores images through the
faces ingest, whose erasure imports ``ratings.services`` (a circle at import time).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from django.db import transaction
from PIL import Image

from deidplatform.errors import INVALID, AppError
from models_app.faces.selectors import load_rgb_array
from models_app.faces.services import ingest_image
from models_app.models import FaceImage
from models_app.vision.imagefile import encode_png

from ..models import Campaign, Pair
from .pairs import _image_pk, create_pairs

# Gold pairs: the jitter of a known-same copy is what a second photo of the same moment
# would differ by (a little framing, a little exposure), well inside what people ignore.
GOLD_MAX_SHIFT = 0.02  # of the image side
GOLD_MAX_SCALE = 0.03  # relative
GOLD_MAX_BRIGHTNESS = 0.06  # relative gain


def jitter_image(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lightly shifted, scaled and brightened copy (same size, edges replicated)."""
    h, w = rgb.shape[:2]
    s = 1.0 + rng.uniform(-GOLD_MAX_SCALE, GOLD_MAX_SCALE)
    dx, dy = rng.uniform(-GOLD_MAX_SHIFT, GOLD_MAX_SHIFT, size=2) * (w, h)
    gain = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(GOLD_MAX_BRIGHTNESS / 3, GOLD_MAX_BRIGHTNESS)
    cx, cy = w / 2, h / 2
    # Edges replicated, not black: a border would tell the copy apart.
    pad = int(np.ceil((GOLD_MAX_SHIFT + GOLD_MAX_SCALE) * max(h, w))) + 2
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f).
    coeffs = (1 / s, 0.0, cx - (cx + dx) / s + pad, 0.0, 1 / s, cy - (cy + dy) / s + pad)
    moved = Image.fromarray(padded).transform(
        (w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
    )
    out = np.asarray(moved, dtype=np.float32) * gain
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def add_gold_pairs(
    campaign: Campaign,
    sources: Iterable[FaceImage | Any] | None,
    *,
    n_same: int,
    n_different: int,
    n_attention: int = 0,
    seed: int = 0,
) -> list[Pair]:
    """Add known-answer pairs to a campaign, deterministically by ``seed`` for a given set
    of sources: ``n_same`` gold_same pairs (a source against a lightly jittered copy of it,
    stored as an output image whose parent is the source, with its own detection, chip and
    landmarks; a source whose copy loses its face is skipped for the next) and
    ``n_different`` gold_different pairs (two sources of different subjects, each unordered
    pair once), then ``n_attention`` attention checks (one source shown twice: obvious to
    anyone paying attention). Fewer pairs than asked come back when the sources do not
    allow more.
    ``sources``: images or their ids; None: the sources of the campaign's deid pairs."""
    for field, n in (("n_same", n_same), ("n_different", n_different),
                     ("n_attention", n_attention)):
        if n < 0:
            raise AppError(INVALID, "Counts must be >= 0.", field=field)
    if sources is None:
        sources = FaceImage.objects.filter(
            pk__in=Pair.objects.filter(campaign=campaign, kind=Pair.Kind.DEID)
            .values("image_a_id")
        )
    else:
        given = list(sources)
        ids = [_image_pk(s) for s in given]
        sources = FaceImage.objects.filter(pk__in=ids)
        if len(set(ids)) != sources.count():
            raise AppError(INVALID, "Some image ids do not exist.", field="images")
    usable = sorted(
        (s for s in sources
         if s.kind == FaceImage.Kind.SOURCE and s.status == FaceImage.Status.OK and s.landmarks),
        key=lambda s: str(s.pk),
    )
    if n_different and len({s.subject_id for s in usable}) < 2:
        raise AppError(
            INVALID, "Known-different pairs need sources of at least two subjects.",
            field="n_different",
        )
    rng = np.random.default_rng(seed)
    items: list[dict[str, Any]] = []
    with transaction.atomic():
        for i in rng.permutation(len(usable)):
            if len(items) >= n_same:
                break
            copy = _jittered_copy(usable[i], rng)
            if copy is not None:
                items.append({"image_a": usable[i].pk, "image_b": copy.pk,
                              "kind": Pair.Kind.GOLD_SAME})
        seen: set[frozenset] = set()
        tries = 0
        want = len(items) + n_different
        while len(items) < want and tries < 50 * max(n_different, 1):
            tries += 1
            a, b = (usable[k] for k in rng.choice(len(usable), size=2, replace=False))
            key = frozenset((a.pk, b.pk))
            if a.subject_id == b.subject_id or key in seen:
                continue
            seen.add(key)
            items.append({"image_a": a.pk, "image_b": b.pk, "kind": Pair.Kind.GOLD_DIFFERENT})
        for k in rng.permutation(len(usable))[:n_attention]:
            items.append({"image_a": usable[k].pk, "image_b": usable[k].pk,
                          "kind": Pair.Kind.ATTENTION, "expected_same": True})
        return create_pairs(campaign, items)


def _jittered_copy(src: FaceImage, rng: np.random.Generator) -> FaceImage | None:
    """The jittered copy stored through the faces ingest (None when no face is found in it;
    the same bytes again return the copy stored before)."""
    data = encode_png(jitter_image(load_rgb_array(src), rng))
    ingest = ingest_image(data, subject=src.subject, kind=FaceImage.Kind.OUTPUT, parent=src)
    img = ingest.image
    if img is None or img.status != FaceImage.Status.OK or img.pk == src.pk:
        return None
    return img


# Known-answer pairs a campaign needs when it asks for them: its qualification set (half
# known-same, half known-different), twice that as a pool when gold is also mixed into the
# work (so a rater does not meet the qualification pairs again), and a few attention checks.
MIN_GOLD_POOL = 4
ATTENTION_POOL = 4


def known_answer_needs(campaign: Campaign) -> dict[str, int]:
    """How many gold_same, gold_different and attention pairs ``campaign`` should have."""
    gold = campaign.qualification_size
    if campaign.gold_rate > 0:
        gold = max(2 * gold, MIN_GOLD_POOL)
    return {
        Pair.Kind.GOLD_SAME: (gold + 1) // 2,
        Pair.Kind.GOLD_DIFFERENT: gold // 2,
        Pair.Kind.ATTENTION: ATTENTION_POOL if campaign.attention_rate > 0 else 0,
    }


def ensure_known_answer_pairs(campaign: Campaign) -> dict[str, Any]:
    """Top up the campaign's gold and attention pairs to :func:`known_answer_needs` from the
    sources of its de-identification pairs (nothing is removed). Returns the counts added
    and, when some could not be made, why (no sources yet, one subject only) — not an error:
    the next call (another activation, more pairs) tries again."""
    needs = known_answer_needs(campaign)
    have = dict.fromkeys(needs, 0)
    for kind in Pair.objects.filter(campaign=campaign, kind__in=list(needs)).values_list(
            "kind", flat=True):
        have[kind] += 1
    missing = {k: max(0, n - have[k]) for k, n in needs.items()}
    result: dict[str, Any] = {"added": dict.fromkeys(needs, 0), "reason": ""}
    if not any(missing.values()):
        return result
    # The sources add_gold_pairs can use: stored sources with landmarks.
    sources = FaceImage.objects.filter(
        pk__in=Pair.objects.filter(campaign=campaign, kind=Pair.Kind.DEID).values("image_a_id"),
        kind=FaceImage.Kind.SOURCE, status=FaceImage.Status.OK, landmarks__isnull=False,
    )
    subjects = set(sources.values_list("subject_id", flat=True))
    n_different = missing[Pair.Kind.GOLD_DIFFERENT] if len(subjects) >= 2 else 0
    if not subjects:
        result["reason"] = ("the campaign has no de-identification pairs with usable sources to "
                            "make them from yet")
        return result
    if missing[Pair.Kind.GOLD_DIFFERENT] and not n_different:
        result["reason"] = "known-different pairs need sources of at least two subjects"
    pairs = add_gold_pairs(
        campaign, None, n_same=missing[Pair.Kind.GOLD_SAME], n_different=n_different,
        n_attention=missing[Pair.Kind.ATTENTION], seed=sum(have.values()) + 1,
    )
    for p in pairs:
        result["added"][p.kind] += 1
    short = {k for k, n in missing.items() if result["added"][k] < n}
    if short and not result["reason"]:
        result["reason"] = "the campaign's sources allow fewer: " + ", ".join(sorted(short))
    return result
