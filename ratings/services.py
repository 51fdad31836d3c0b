"""Writes for the rating flow. Each public function is one transaction; see ASSIGNMENT.md."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.utils import timezone

from models_app.models import FaceImage

from . import locking
from .models import Assignment, Campaign, Judgment, Pair, PairLabel, Rater

log = logging.getLogger(__name__)

RECLAIM_BATCH = 100
RECLAIM_INTERVAL = timedelta(seconds=1)
DEFAULT_HOLDS = 2  # the pair on screen plus the next one, preloaded


class RatingError(Exception):
    """A refusal the caller can show: views turn it into 4xx JSON."""

    def __init__(self, field: str, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.field, self.code, self.detail, self.status = field, code, detail, status


# --- Raters -------------------------------------------------------------------------------


def get_or_create_rater(
    campaign: Campaign,
    *,
    user: AbstractBaseUser | None = None,
    source: str = Rater.Source.LOCAL,
    external_id: str = "",
    meta: Mapping[str, str] | None = None,
) -> Rater:
    """Create or resume the rater for a user or an external participant id."""
    if user is None and not external_id:
        raise RatingError("rater", "no_identity", "A user or an external participant id is needed.")
    lookup: dict[str, Any] = (
        {"user": user} if user is not None else {"source": source, "external_id": external_id}
    )
    for _ in range(2):  # a second tab may create the same rater concurrently
        try:
            with transaction.atomic():
                rater, created = Rater.objects.get_or_create(
                    campaign=campaign, **lookup,
                    defaults={"external_meta": dict(meta or {}),
                              "source": source if user is None else Rater.Source.LOCAL,
                              # No qualification asked: qualified from the start, so the
                              # first "next" already takes the hot path.
                              "qualified": campaign.qualification_size == 0},
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - two races in a row
        rater = Rater.objects.get(campaign=campaign, **lookup)
    if not created and meta and any(rater.external_meta.get(k) != v for k, v in meta.items()):
        Rater.objects.filter(pk=rater.pk).update(external_meta={**rater.external_meta, **meta})
    return rater


def record_consent(rater: Rater) -> Rater:
    if rater.consented_at is None:
        rater.consented_at = timezone.now()
        rater.save(update_fields=["consented_at"])
    return rater


# --- Reclaiming expired holds ------------------------------------------------------------


def reclaim_expired_holds(
    campaign_id: int | None = None, *, now: datetime | None = None, limit: int = RECLAIM_BATCH
) -> int:
    """Expire holds past their deadline and give their slot back to the pair; returns the
    number of pairs reclaimed. Its own transaction, holding no other lock, so it may wait
    for pair locks (in ascending order) without risk of a cycle."""
    now = now or timezone.now()
    with transaction.atomic():
        due = Assignment.objects.filter(state=Assignment.State.ISSUED, expires__lte=now)
        if campaign_id is not None:
            due = due.filter(campaign_id=campaign_id)
        pair_ids = list(
            due.order_by("pair_id").values_list("pair_id", flat=True).distinct()[:limit]
        )
        if not pair_ids:
            return 0
        pairs = locking.lock_pairs(pair_ids)
        return _expire_holds(pairs, now, Q(expires__lte=now))


def _expire_holds(pairs: list[Pair], now: datetime, condition: Q) -> int:
    """Caller holds the pair locks. Expire matching issued holds; give deid slots back."""
    if not pairs:
        return 0
    holds = locking.lock_assignments(
        [p.pk for p in pairs], condition, state=Assignment.State.ISSUED
    )
    if not holds:
        return 0
    Assignment.objects.filter(pk__in=[a.pk for a in holds]).update(
        state=Assignment.State.EXPIRED, closed=now
    )
    _give_back_slots(pairs, [a.pair_id for a in holds])
    return len(holds)


def _give_back_slots(pairs: Iterable[Pair], pair_ids: Iterable[int]) -> None:
    """Caller holds the locks of ``pairs``; decrement ``taken`` once per id for deid pairs."""
    deid = {p.pk for p in pairs if p.kind == Pair.Kind.DEID}
    counts: dict[int, int] = {}
    for pid in pair_ids:
        if pid in deid:
            counts[pid] = counts.get(pid, 0) + 1
    for pid, n in counts.items():
        Pair.objects.filter(pk=pid).update(taken=F("taken") - n)


# --- Next assignment ----------------------------------------------------------------------


@dataclass
class NextResult:
    """``status``: ok | blocked | finished | no_work | closed | consent_required."""

    status: str
    assignments: list[Assignment] = field(default_factory=list)
    rater: Rater | None = None


def qualification_target(campaign: Campaign) -> int:
    """Gold judgments needed to qualify (never more than the gold pairs that exist)."""
    if campaign.qualification_size == 0:
        return 0
    n_gold = Pair.objects.filter(
        campaign=campaign, active=True, kind__in=Pair.GOLD_KINDS
    ).count()
    return min(campaign.qualification_size, n_gold)


def next_assignments(
    rater_id: int, *, campaign_id: int | None = None, holds: int = DEFAULT_HOLDS,
    now: datetime | None = None,
) -> NextResult:
    """The rater's open assignments, topped up to ``holds`` (oldest first). See ASSIGNMENT.md."""
    now = now or timezone.now()
    if campaign_id is None:
        campaign_id = Rater.objects.filter(pk=rater_id).values_list("campaign_id", flat=True).first()
        if campaign_id is None:
            raise RatingError("rater", "not_found", "No such rater.", 404)
    # Reclaim first, in its own committed transaction, so the slots it frees are visible
    # to the choice below (and to every other rater asking at the same moment).
    _maybe_reclaim(campaign_id, now)
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        return _next_locked(rater, holds, now, held=0)


def _next_locked(rater: Rater, holds: int, now: datetime, *, held: int) -> NextResult:
    """Body of next_assignments; the caller holds the rater's lock and ``held`` pair locks."""
    campaign = rater.campaign
    if rater.blocked:
        return NextResult("blocked", rater=rater)
    if campaign.status != Campaign.Status.ACTIVE:
        return NextResult("closed", rater=rater)
    if campaign.consent_text and rater.consented_at is None:
        return NextResult("consent_required", rater=rater)
    open_holds = list(
        rater.assignments.filter(state=Assignment.State.ISSUED).order_by("issued", "pk")
    )
    live = [a for a in open_holds if a.expires > now]
    # From here the transaction may hold pair locks (taken with SKIP LOCKED): it must
    # then never *wait* for another pair, or two raters could deadlock.
    if len(live) < len(open_holds):
        held += _expire_own_holds(rater, now)
    target = 0
    if not rater.qualified:
        target = qualification_target(campaign)
        if target == 0:
            rater.qualified = True
            rater.save(update_fields=["qualified"])
    stop_reason = "no_work"
    while len(live) < holds:
        if campaign.rater_quota and rater.judgments_count + len(live) >= campaign.rater_quota:
            stop_reason = "finished"
            break
        assignment = _issue_one(rater, campaign, live, target, now, may_wait=held == 0)
        if assignment is None:
            break
        held += int(assignment.pair.kind == Pair.Kind.DEID)
        live.append(assignment)
    if live:
        return NextResult("ok", live, rater)
    if rater.qualified and (rater.judgments_count or stop_reason == "finished"):
        return NextResult("finished", rater=rater)
    return NextResult(stop_reason, rater=rater)


_last_reclaim: dict[int, datetime] = {}


def _maybe_reclaim(campaign_id: int, now: datetime) -> None:
    """Campaign-wide reclaim; after a call that found nothing due, the next one waits
    RECLAIM_INTERVAL (per process): it would be a wasted query on every request otherwise.
    While holds are due, every call reclaims, so none waits on a stale "nothing due"."""
    last = _last_reclaim.get(campaign_id)
    if last is not None and timedelta(0) <= now - last < RECLAIM_INTERVAL:
        return
    if reclaim_expired_holds(campaign_id, now=now) == 0:
        _last_reclaim[campaign_id] = now
    else:
        _last_reclaim.pop(campaign_id, None)


def _expire_own_holds(rater: Rater, now: datetime) -> int:
    """The rater's own overdue holds (the campaign-wide reclaim is bounded and throttled);
    returns the number of pair locks taken. A hold whose pair is busy stays for later."""
    pair_ids = list(
        rater.assignments.filter(state=Assignment.State.ISSUED, expires__lte=now)
        .values_list("pair_id", flat=True)
    )
    pairs = locking.lock_pairs(pair_ids, skip_locked=True)
    _expire_holds(pairs, now, Q(rater=rater, expires__lte=now))
    return len(pairs)


def _issue_one(
    rater: Rater, campaign: Campaign, live: list[Assignment], target: int, now: datetime,
    *, may_wait: bool,
) -> Assignment | None:
    if not rater.qualified:
        held = sum(1 for a in live if a.phase == Assignment.Phase.QUALIFICATION)
        if rater.gold_count + held >= target:
            return None  # wait for the verdict on the qualification pairs already out
        pair = _pick_known(rater, campaign, Pair.GOLD_KINDS)
        phase = Assignment.Phase.QUALIFICATION
    else:
        phase = Assignment.Phase.WORK
        roll = random.random()
        pair = None
        if roll < campaign.attention_rate:
            pair = _pick_known(rater, campaign, (Pair.Kind.ATTENTION,))
        elif roll < campaign.attention_rate + campaign.gold_rate:
            pair = _pick_known(rater, campaign, Pair.GOLD_KINDS)
        if pair is None:
            pair = _claim_deid(rater, campaign, may_wait=may_wait)
    if pair is None:
        return None
    return Assignment.objects.create(
        campaign=campaign, rater=rater, pair=pair, phase=phase,
        left_is_a=random.random() < 0.5, issued=now,
        expires=now + timedelta(seconds=campaign.hold_timeout_s),
    )


def _seen_by(rater: Rater) -> Exists:
    return Exists(
        Assignment.objects.filter(rater=rater, pair=OuterRef("pk")).exclude(
            state=Assignment.State.EXPIRED
        )
    )


def _pick_known(rater: Rater, campaign: Campaign, kinds: Iterable[str]) -> Pair | None:
    # Known pairs have no cap (every rater may see each once), so no lock is needed.
    return (
        Pair.objects.filter(campaign=campaign, active=True, kind__in=list(kinds))
        .filter(~_seen_by(rater))
        .order_by("?")
        .first()
    )


def _claim_deid(rater: Rater, campaign: Campaign, *, may_wait: bool) -> Pair | None:
    """A deid pair for this rater with one slot taken for them (``taken + 1``), locked.

    Fullest first ("depth first"): finished pairs give labels sooner. ``taken`` never goes
    above k because it only changes while the row is locked.
    """
    k = campaign.judgments_per_pair
    pair = locking.claim_deid_pair(campaign.pk, rater.pk, k)  # one statement, SKIP LOCKED
    if pair is not None or (locking.skip_locked_supported() and not may_wait):
        return pair
    candidates = (
        Pair.objects.filter(campaign=campaign, active=True, kind=Pair.Kind.DEID, taken__lt=k)
        .filter(~_seen_by(rater))
        .order_by("-taken", "pk")
    )
    pair = locking.lock_first_pair(candidates, may_wait=may_wait)
    if pair is not None:
        Pair.objects.filter(pk=pair.pk).update(taken=F("taken") + 1)
        pair.taken += 1
    return pair


# --- Submission and quality control -------------------------------------------------------


@dataclass
class SubmitResult:
    judgment: Judgment
    created: bool
    rater: Rater
    next: NextResult | None = None


def submit_judgment(
    rater_id: int,
    assignment_public_id: Any,
    *,
    same: bool,
    confidence: int,
    response_ms: int,
    now: datetime | None = None,
    then_next: int = 0,
    campaign_id: int | None = None,
) -> SubmitResult:
    """Record a judgment exactly once; a retry of the same submission returns the first one.

    With ``then_next=n`` the rater's next holds (as ``next_assignments(holds=n)``) are
    issued in the same transaction: one round trip and one commit per judgment.
    """
    now = now or timezone.now()
    refusal: RatingError | None = None
    result: SubmitResult | None = None
    if then_next and campaign_id is not None:
        _maybe_reclaim(campaign_id, now)
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        # Pair first (lock order), found through the assignment in the same statement.
        pair = (
            Pair.objects.filter(pk=Subquery(
                Assignment.objects.filter(public_id=assignment_public_id, rater_id=rater.pk)
                .values("pair_id")[:1]
            )).select_for_update(of=("self",)).first()
        )
        if pair is None:
            # Same answer for "someone else's" and "no such": do not confirm it exists.
            raise RatingError("assignment", "not_found", "No such assignment.", 404)
        # Every writer of an assignment holds its pair's lock, so this read is stable.
        assignment = Assignment.objects.get(public_id=assignment_public_id)
        if assignment.state == Assignment.State.SUBMITTED:
            judgment = Judgment.objects.get(assignment=assignment)
            if (judgment.same, judgment.confidence) != (same, confidence):
                raise RatingError(
                    "assignment", "already_judged",
                    "This assignment was already judged with a different answer.", 409,
                )
            result = SubmitResult(judgment, False, rater)
        elif rater.blocked:
            raise RatingError("rater", "blocked", "This rater can no longer submit.", 403)
        elif assignment.state == Assignment.State.EXPIRED or assignment.expires <= now:
            if assignment.state == Assignment.State.ISSUED:
                _expire_holds([pair], now, Q(pk=assignment.pk))
            refusal = RatingError("assignment", "expired", "This assignment has expired.", 409)
        else:
            result = _record(rater, assignment, pair, same, confidence, response_ms, now)
        if result is not None and then_next and not rater.blocked:
            result.next = _next_locked(rater, then_next, now, held=1)
    if refusal is not None:
        raise refusal
    assert result is not None
    if result.created and result.rater.blocked:
        # Separate transaction so the pair locks are taken in ascending order (locking.py).
        release_blocked_rater(rater_id, now=now)
    return result


def _record(
    rater: Rater, assignment: Assignment, pair: Pair, same: bool, confidence: int,
    response_ms: int, now: datetime,
) -> SubmitResult:
    campaign = rater.campaign
    correct = None if pair.expected_same is None else (same == pair.expected_same)
    too_fast = response_ms < campaign.min_response_ms
    judgment = Judgment.objects.create(
        assignment=assignment, campaign=campaign, rater=rater, pair=pair, same=same,
        confidence=confidence, response_ms=response_ms, correct=correct, too_fast=too_fast,
        left_image_id=pair.image_a_id if assignment.left_is_a else pair.image_b_id,
    )
    Assignment.objects.filter(pk=assignment.pk).update(
        state=Assignment.State.SUBMITTED, closed=now
    )
    rater.judgments_count += 1
    rater.too_fast_count += int(too_fast)
    if pair.kind == Pair.Kind.ATTENTION:
        rater.attention_count += 1
        rater.attention_failed += int(not correct)
        if rater.attention_failed > campaign.attention_failures_allowed:
            _mark_blocked(rater, "attention", now)
    elif pair.kind in Pair.GOLD_KINDS:
        rater.gold_count += 1
        rater.gold_correct += int(bool(correct))
        accuracy = rater.gold_correct / rater.gold_count
        if not rater.qualified:
            if rater.gold_count >= qualification_target(campaign):
                if accuracy >= campaign.pass_mark:
                    rater.qualified = True
                else:
                    _mark_blocked(rater, "qualification", now)
        elif accuracy < campaign.pass_mark:
            _mark_blocked(rater, "gold_accuracy", now)
    rater.save(update_fields=[
        "judgments_count", "too_fast_count", "attention_count", "attention_failed",
        "gold_count", "gold_correct", "qualified", "blocked", "blocked_reason", "blocked_at",
    ])
    if not campaign.labels_pending:  # as read with the rater lock; the UPDATE re-checks
        mark_labels_pending(campaign.pk)
    return SubmitResult(judgment, True, rater)


def _mark_blocked(rater: Rater, reason: str, now: datetime) -> None:
    rater.blocked, rater.blocked_reason, rater.blocked_at = True, reason, now
    log.info("rater %s blocked: %s", rater.public_id, reason)


def block_rater(rater_id: int, reason: str = "operator", *, now: datetime | None = None) -> Rater:
    """Block a rater by hand (operators); their judgments stay but leave the labels."""
    now = now or timezone.now()
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        if not rater.blocked:
            _mark_blocked(rater, reason, now)
            rater.save(update_fields=["blocked", "blocked_reason", "blocked_at"])
    release_blocked_rater(rater_id, now=now)
    mark_labels_pending(rater.campaign_id)
    return rater


def release_blocked_rater(rater_id: int, *, now: datetime | None = None) -> None:
    """A blocked rater's holds expire and their counted deid judgments free their slots,
    so every pair can still reach k judgments from raters in good standing."""
    now = now or timezone.now()
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        if not rater.blocked:
            return
        hold_pairs = list(
            rater.assignments.filter(state=Assignment.State.ISSUED).values_list("pair_id", flat=True)
        )
        judged = [] if rater.slots_released else list(
            rater.judgments.filter(pair__kind=Pair.Kind.DEID).values_list("pair_id", flat=True)
        )
        pairs = locking.lock_pairs(hold_pairs + judged)
        _expire_holds(pairs, now, Q(rater=rater))
        _give_back_slots(pairs, judged)
        Rater.objects.filter(pk=rater.pk).update(slots_released=True)


def unblock_rater(rater_id: int) -> Rater:
    """Undo a block (operators): their counted judgments take their slots again.

    This may push a pair above k judgments if others filled the freed slots meanwhile;
    the labels stay correct (they count every judgment in good standing).
    """
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        if not rater.blocked:
            return rater
        if rater.slots_released:
            judged = list(
                rater.judgments.filter(pair__kind=Pair.Kind.DEID).values_list("pair_id", flat=True)
            )
            pairs = locking.lock_pairs(judged)
            for p in pairs:
                Pair.objects.filter(pk=p.pk).update(taken=F("taken") + 1)
        rater.blocked, rater.blocked_reason, rater.blocked_at = False, "", None
        rater.slots_released = False
        rater.save(update_fields=["blocked", "blocked_reason", "blocked_at", "slots_released"])
    mark_labels_pending(rater.campaign_id)
    return rater


def mark_labels_pending(campaign_id: int) -> None:
    """Debounce: one label update is queued per burst of judgments, not one per judgment.

    The UPDATE matches no row while an update is already pending, so it takes no lock then.
    """
    if Campaign.objects.filter(pk=campaign_id, labels_pending=False).update(labels_pending=True):
        from .tasks import update_campaign_labels

        update_campaign_labels.delay_on_commit(campaign_id)


# --- Campaigns and pairs ------------------------------------------------------------------


def create_pairs(campaign: Campaign, items: Iterable[Mapping[str, Any]]) -> list[Pair]:
    """Bulk-create pairs; all or nothing."""
    rows = []
    for item in items:
        kind = item.get("kind", Pair.Kind.DEID)
        expected = item.get("expected_same")
        if kind == Pair.Kind.GOLD_SAME:
            expected = True
        elif kind == Pair.Kind.GOLD_DIFFERENT:
            expected = False
        elif kind == Pair.Kind.DEID:
            expected = None
        elif expected is None:
            expected = item["image_a"] == item["image_b"]
        rows.append(Pair(
            campaign=campaign, image_a_id=_image_pk(item["image_a"]),
            image_b_id=_image_pk(item["image_b"]), kind=kind, expected_same=expected,
            deid_job_id=item.get("deid_job"),
        ))
    with transaction.atomic():
        return Pair.objects.bulk_create(rows, batch_size=1000)


def _image_pk(value: Any) -> Any:
    return value.pk if isinstance(value, FaceImage) else value


# --- Labels ---------------------------------------------------------------------------------


def recompute_labels(campaign_id: int, method: str = PairLabel.Method.DAWID_SKENE) -> dict:
    """Aggregate judgments of raters in good standing into PairLabels, reliabilities and α."""
    from . import aggregation, selectors

    Campaign.objects.filter(pk=campaign_id).update(labels_pending=False)
    rows = selectors.judgment_triples(campaign_id)
    result = aggregation.aggregate(rows, method=method)
    now = timezone.now()
    counts = dict(
        Judgment.objects.filter(campaign_id=campaign_id, rater__blocked=False)
        .values_list("pair_id").annotate(n=Count("pk")).values_list("pair_id", "n")
    )
    with transaction.atomic():
        existing = {pl.pair_id: pl for pl in PairLabel.objects.filter(pair__campaign_id=campaign_id)}
        new, changed = [], []
        for pair_id, score in result.score_a.items():
            label = existing.pop(pair_id, None) or PairLabel(pair_id=pair_id)
            label.score_a, label.same = float(score), bool(score >= 0.5)
            label.n_judgments, label.method, label.updated = counts.get(pair_id, 0), method, now
            (changed if label.pk else new).append(label)
        PairLabel.objects.bulk_create(new, batch_size=1000)
        PairLabel.objects.bulk_update(
            changed, ["score_a", "same", "n_judgments", "method", "updated"], batch_size=1000
        )
        if existing:  # pairs whose only judgments came from raters now blocked
            PairLabel.objects.filter(pk__in=[pl.pk for pl in existing.values()]).delete()
        # Rater rows are locked one statement at a time in ascending id (locking.py order)
        # and only where the value changed; the campaign row is written last.
        for r in Rater.objects.filter(campaign_id=campaign_id).order_by("pk").only("reliability"):
            value = result.reliability.get(r.pk)
            if value != r.reliability:
                Rater.objects.filter(pk=r.pk).update(reliability=value)
        Campaign.objects.filter(pk=campaign_id).update(
            krippendorff_alpha=result.alpha, labels_updated=now
        )
    return {"labels": len(result.score_a), "alpha": result.alpha, "method": method}
