"""Reads for the rating flow: what a rater may see, progress, labels, exports.

Never imports services (services read through here, not the other way round)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db.models import Exists, OuterRef, QuerySet, Value

from models_app.models import FaceImage

from .models import Assignment, Campaign, Judgment, Pair, PairLabel, Rater

IMAGE_SALT = "ratings.image"
EXPORT_CHUNK = 2000


def qualification_target(campaign: Campaign) -> int:
    """Gold judgments needed to qualify (never more than the gold pairs that exist)."""
    if campaign.qualification_size == 0:
        return 0
    n_gold = Pair.objects.filter(
        campaign=campaign, active=True, kind__in=Pair.GOLD_KINDS
    ).count()
    return min(campaign.qualification_size, n_gold)


def label_judgments(campaign_id: int) -> QuerySet[Judgment]:
    """The judgments labels count: raters in good standing (blocked raters' judgments are
    kept but never reach a label), and people only, unless the campaign's
    ``labels_include_simulated`` asks for its simulated crowd's too (a dry run)."""
    qs = Judgment.objects.filter(campaign_id=campaign_id, rater__blocked=False)
    if not Campaign.objects.filter(pk=campaign_id, labels_include_simulated=True).exists():
        qs = qs.filter(rater__simulated=False)
    return qs


def judgment_triples(campaign_id: int) -> list[tuple[int, int, bool]]:
    """(rater, pair, same) of the judgments labels count (:func:`label_judgments`)."""
    return list(
        label_judgments(campaign_id).order_by("pk").values_list("rater_id", "pair_id", "same")
    )


def _public_id(value: str | None) -> uuid.UUID | None:
    """The rater id a session holds, or None when it is missing or not a UUID."""
    if not value:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def rater_for_campaign(campaign: Campaign, rater_public_id: str | None) -> Rater | None:
    """The rater with this public id in this campaign, if any."""
    key = _public_id(rater_public_id)
    if key is None:
        return None
    return Rater.objects.filter(campaign=campaign, public_id=key).first()


def rater_by_slug(slug: str, rater_public_id: str | None) -> Rater | None:
    """One query: the session's rater in the (non-draft) campaign with this slug."""
    key = _public_id(rater_public_id)
    if key is None:
        return None
    rater = Rater.objects.select_related("campaign").filter(public_id=key).first()
    if rater is None or rater.campaign.slug != slug or rater.campaign.status == "draft":
        return None
    return rater


@dataclass
class Progress:
    """Two phases, each with its own count: qualification (gold pairs with known answers),
    then work (real pairs). ``done``/``target`` are the current phase's; ``work_min`` is
    what the completion code needs (campaign ``min_work_pairs``, capped at the pairs that
    exist); ``work_target`` the most real pairs this rater may be given."""

    phase: str
    done: int
    target: int
    qualifying: bool
    qualification_done: int
    qualification_target: int
    work_done: int
    work_min: int
    work_target: int


def work_minimum(min_work_pairs: int, n_deid: int, quota: int = 0, q_size: int = 0) -> int:
    """Real pairs a rater judges before the completion code: the campaign's minimum, never
    more than the pairs that exist, nor than a per-rater quota leaves after qualification
    (but at least one real pair whenever one exists)."""
    n = min(min_work_pairs, n_deid)
    if quota:
        n = min(n, max(quota - q_size, 1))
    return n


def progress_from_counts(
    *, qualified: bool, judgments: int, gold: int, attention: int, q_target: int,
    quota: int, min_work_pairs: int, n_deid: int,
) -> Progress:
    """Progress from a rater's counters (shared by the Python path and the SQL hot path).

    Work target: each real pair at most once, and within the quota (which counts every
    judgment) what the qualification leaves. Never below what was already done, so a bar
    is full only when no more real pairs will come."""
    work_done = judgments - gold - attention
    q_done = min(gold, q_target)
    work_target = n_deid
    if quota:
        work_target = min(work_target, max(quota - q_target, 0))
    work_min = work_minimum(min_work_pairs, n_deid, quota, q_target)
    work_target = max(work_target, work_min, work_done)
    if qualified:
        phase, done, target = "work", work_done, work_target
    else:
        phase, done, target = "qualification", q_done, q_target
    return Progress(
        phase=phase, done=done, target=target, qualifying=not qualified,
        qualification_done=q_done, qualification_target=q_target,
        work_done=work_done, work_min=work_min, work_target=work_target,
    )


def rater_progress(rater: Rater, campaign: Campaign) -> Progress:
    q_target = campaign.qualification_size if rater.qualified else qualification_target(campaign)
    return progress_from_counts(
        qualified=rater.qualified, judgments=rater.judgments_count, gold=rater.gold_count,
        attention=rater.attention_count, q_target=q_target, quota=campaign.rater_quota,
        min_work_pairs=campaign.min_work_pairs, n_deid=open_deid_pairs(campaign.pk),
    )


def work_minimum_met(rater: Rater, campaign: Campaign, pending: int = 0) -> bool:
    """Has the rater judged (or, with ``pending`` real pairs on hold, will they have judged)
    the real pairs the completion code needs? Pairs counted afresh (not the cached count):
    asked only at a quota or when a rater runs out of holds, as the hot path does."""
    work = rater.work_count + pending
    if work >= campaign.min_work_pairs:
        return True
    n_deid = Pair.objects.filter(campaign_id=campaign.pk, active=True, kind=Pair.Kind.DEID).count()
    return work >= work_minimum(campaign.min_work_pairs, n_deid,
                                campaign.rater_quota, campaign.qualification_size)


def open_deid_pairs(campaign_id: int) -> int:
    """Number of active deid pairs; cached briefly because every page and API call shows it."""
    key = f"ratings:deid-pairs:{campaign_id}"
    n = cache.get(key)
    if n is None:
        n = Pair.objects.filter(campaign_id=campaign_id, active=True, kind="deid").count()
        cache.set(key, n, 30)
    return n


# --- Signed image URLs -------------------------------------------------------------------


def image_token(assignment: Assignment, side: str) -> str:
    """Opaque, signed, short-lived: names the rater's own assignment and a side, nothing else."""
    return signed_image_token(assignment.public_id.hex, assignment.rater.public_id.hex, side)


def signed_image_token(assignment_hex: str, rater_hex: str, side: str) -> str:
    """``image_token`` from the two public ids (hex), as the hot path has them."""
    payload = {"a": assignment_hex, "r": rater_hex, "s": side}
    return signing.dumps(payload, salt=IMAGE_SALT, compress=True)


def image_for_token(token: str, rater: Rater | None) -> FaceImage | None:
    """The image a token names, if it is still valid for this rater and this open hold."""
    if rater is None:
        return None
    try:
        payload = signing.loads(
            token, salt=IMAGE_SALT, max_age=settings.RATINGS_IMAGE_URL_MAX_AGE
        )
    except signing.BadSignature:  # includes SignatureExpired
        return None
    if not isinstance(payload, dict) or payload.get("r") != rater.public_id.hex:
        return None
    side = payload.get("s")
    if side not in ("left", "right"):
        return None
    assignment = (
        Assignment.objects.select_related("pair__image_a", "pair__image_b")
        .filter(public_id=uuid.UUID(payload["a"]), rater=rater, state=Assignment.State.ISSUED)
        .first()
    )
    if assignment is None:
        return None
    pair = assignment.pair
    left, right = (pair.image_a, pair.image_b) if assignment.left_is_a else (pair.image_b, pair.image_a)
    return left if side == "left" else right


def context_crop_png(face: FaceImage) -> bytes | None:
    """The aligned context crop (face, hair, ears and surroundings; 300 px, as the proxy
    sees it) of a stored face, as PNG; None without stored landmarks. Computed on request
    from the private photo and the stored detection (no detector run), never stored."""
    if not (face.box and face.landmarks):
        return None
    import io

    from PIL import Image

    from models_app.faces.selectors import context_of

    buf = io.BytesIO()
    Image.fromarray(context_of(face)).save(buf, format="PNG")
    return buf.getvalue()


# --- Exports --------------------------------------------------------------------------------

JUDGMENT_FIELDS = [
    "judgment", "pair", "pair_kind", "rater", "rater_blocked", "same", "confidence",
    "response_ms", "left_image", "correct", "too_fast", "created", "simulated",
]
# ``simulated``: the label counts judgments of a simulated crowd (labels_include_simulated).
LABEL_FIELDS = ["pair", "pair_kind", "image_a", "image_b", "deid_job", "score_a", "same",
                "n_judgments", "method", "updated", "simulated"]


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def iter_judgment_rows(campaign_id: int) -> Iterator[dict[str, Any]]:
    """Every judgment of the campaign (blocked raters' too, flagged), as export rows."""
    qs: QuerySet = Judgment.objects.filter(campaign_id=campaign_id).order_by("pk").values_list(
        "pk", "pair_id", "pair__kind", "rater__public_id", "rater__blocked", "same",
        "confidence", "response_ms", "left_image_id", "correct", "too_fast", "created",
        "rater__simulated",
    )
    for row in qs.iterator(chunk_size=EXPORT_CHUNK):
        yield dict(zip(JUDGMENT_FIELDS, (_plain(v) for v in row), strict=True))


def iter_label_rows(campaign_id: int) -> Iterator[dict[str, Any]]:
    """Every PairLabel of the campaign, as export rows. ``simulated``: judgments of the
    simulated crowd count in this label (as the campaign's switch stands now)."""
    include_sim = Campaign.objects.filter(pk=campaign_id, labels_include_simulated=True).exists()
    simulated = Exists(Judgment.objects.filter(
        pair_id=OuterRef("pair_id"), rater__simulated=True, rater__blocked=False
    )) if include_sim else Value(False)
    qs: QuerySet = PairLabel.objects.filter(pair__campaign_id=campaign_id).order_by(
        "pair_id"
    ).annotate(simulated=simulated).values_list(
        "pair_id", "pair__kind", "pair__image_a_id", "pair__image_b_id", "pair__deid_job_id",
        "score_a", "same", "n_judgments", "method", "updated", "simulated",
    )
    for row in qs.iterator(chunk_size=EXPORT_CHUNK):
        yield dict(zip(LABEL_FIELDS, (_plain(v) for v in row), strict=True))
