"""Holds: issuing the next assignments, expiring and reclaiming overdue ones.

The flow is ratings/ASSIGNMENT.md; the lock order is ratings/locking.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from .. import locking
from ..errors import NOT_FOUND, RatingError
from ..models import Assignment, Campaign, Pair, Rater
from ..selectors import qualification_target, work_minimum_met

RECLAIM_BATCH = 100
RECLAIM_INTERVAL = timedelta(seconds=1)
DEFAULT_HOLDS = 2  # the pair on screen plus the next one, preloaded


@dataclass
class NextResult:
    """``status``: ok | blocked | finished | no_work | closed | consent_required."""

    status: str
    assignments: list[Assignment] = field(default_factory=list)
    rater: Rater | None = None


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
        return expire_holds(pairs, now, Q(expires__lte=now))


def expire_holds(pairs: list[Pair], now: datetime, condition: Q) -> int:
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
    give_back_slots(pairs, [a.pair_id for a in holds])
    return len(holds)


def give_back_slots(pairs: Iterable[Pair], pair_ids: Iterable[int]) -> None:
    """Caller holds the locks of ``pairs``; decrement ``taken`` once per id for deid pairs."""
    deid = {p.pk for p in pairs if p.kind == Pair.Kind.DEID}
    counts: dict[int, int] = {}
    for pid in pair_ids:
        if pid in deid:
            counts[pid] = counts.get(pid, 0) + 1
    for pid, n in counts.items():
        Pair.objects.filter(pk=pid).update(taken=F("taken") - n)


_last_reclaim: dict[int, datetime] = {}


def clear_reclaim_clock() -> None:
    """Forget when each campaign last reclaimed expired holds (tests)."""
    _last_reclaim.clear()


def maybe_reclaim(campaign_id: int, now: datetime) -> None:
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


# --- Next assignment ----------------------------------------------------------------------


def next_assignments(
    rater_id: int, *, campaign_id: int | None = None, holds: int = DEFAULT_HOLDS,
    now: datetime | None = None,
) -> NextResult:
    """The rater's open assignments, topped up to ``holds`` (oldest first). See ASSIGNMENT.md."""
    now = now or timezone.now()
    if campaign_id is None:
        campaign_id = Rater.objects.filter(pk=rater_id).values_list("campaign_id", flat=True).first()
        if campaign_id is None:
            raise RatingError(NOT_FOUND, "No such rater.", field="rater")
    # Reclaim first, in its own committed transaction, so the slots it frees are visible
    # to the choice below (and to every other rater asking at the same moment).
    maybe_reclaim(campaign_id, now)
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        return next_locked(rater, holds, now, held=0)


def next_locked(rater: Rater, holds: int, now: datetime, *, held: int) -> NextResult:
    """Body of next_assignments; the caller holds the rater's lock and ``held`` pair locks."""
    campaign = rater.campaign
    if rater.blocked:
        return NextResult("blocked", rater=rater)
    if campaign.status != Campaign.Status.ACTIVE:
        return NextResult("closed", rater=rater)
    if rater.declined_at is not None or (campaign.consent_text and rater.consented_at is None):
        return NextResult("consent_required", rater=rater)  # declined: screened out for good
    if rater.finished_at is not None:  # given the completion code: done for good
        return NextResult("finished", rater=rater)
    open_holds = list(
        rater.assignments.filter(state=Assignment.State.ISSUED).select_related("pair")
        .order_by("issued", "pk")
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
        # The quota ends the work only once the completion code's minimum of real pairs
        # is judged (checks mixed in count towards the quota, not towards the minimum).
        # Real pairs on hold count as work to come (the hot path counts them the same way).
        if (campaign.rater_quota and rater.judgments_count + len(live) >= campaign.rater_quota
                and work_minimum_met(rater, campaign, pending=sum(
                    a.pair.kind == Pair.Kind.DEID for a in live))):
            stop_reason = "finished"
            break
        assignment = _issue_one(rater, campaign, live, target, now, may_wait=held == 0)
        if assignment is None:
            break
        held += int(assignment.pair.kind == Pair.Kind.DEID)
        live.append(assignment)
    if live:
        return NextResult("ok", live, rater)
    # The completion code means work was done: the campaign's minimum of real pairs.
    if rater.qualified and (stop_reason == "finished" or (
        rater.judgments_count and work_minimum_met(rater, campaign)
    )):
        return NextResult("finished", rater=rater)
    return NextResult(stop_reason, rater=rater)


def _expire_own_holds(rater: Rater, now: datetime) -> int:
    """The rater's own overdue holds (the campaign-wide reclaim is bounded and throttled);
    returns the number of pair locks taken. A hold whose pair is busy stays for later."""
    pair_ids = list(
        rater.assignments.filter(state=Assignment.State.ISSUED, expires__lte=now)
        .values_list("pair_id", flat=True)
    )
    pairs = locking.lock_pairs(pair_ids, skip_locked=True)
    expire_holds(pairs, now, Q(rater=rater, expires__lte=now))
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
