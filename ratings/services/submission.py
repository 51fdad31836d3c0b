"""Submission and quality control: record a judgment once, update the rater's QC counters,
block on a failed check, and (optionally) issue the next holds in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from .. import locking
from ..errors import ALREADY_JUDGED, BLOCKED, EXPIRED, NOT_FOUND, RatingError
from ..models import Assignment, Judgment, Pair, Rater
from ..selectors import qualification_target
from .assignment import NextResult, expire_holds, maybe_reclaim, next_locked
from .labels import mark_labels_pending
from .raters import mark_blocked, release_blocked_rater


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
        maybe_reclaim(campaign_id, now)
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        # Pair first (lock order), found through the assignment in the same statement.
        pair = (
            Pair.objects.filter(pk=Subquery(
                Assignment.objects.filter(public_id=assignment_public_id, rater_id=rater.pk)
                .values("pair_id")[:1]
            )).select_for_update(of=("self",), no_key=True).first()
        )
        if pair is None:
            # Same answer for "someone else's" and "no such": do not confirm it exists.
            raise RatingError(NOT_FOUND, "No such assignment.", field="assignment")
        # Every writer of an assignment holds its pair's lock, so this read is stable.
        assignment = Assignment.objects.get(public_id=assignment_public_id)
        if assignment.state == Assignment.State.SUBMITTED:
            judgment = Judgment.objects.get(assignment=assignment)
            if (judgment.same, judgment.confidence) != (same, confidence):
                raise RatingError(
                    ALREADY_JUDGED,
                    "This assignment was already judged with a different answer.",
                    field="assignment",
                )
            result = SubmitResult(judgment, False, rater)
        elif rater.blocked:
            raise RatingError(BLOCKED, "This rater can no longer submit.", field="rater")
        elif assignment.state == Assignment.State.EXPIRED or assignment.expires <= now:
            if assignment.state == Assignment.State.ISSUED:
                expire_holds([pair], now, Q(pk=assignment.pk))
            # Raised after the commit: the expiry above must stay.
            refusal = RatingError(EXPIRED, "This assignment has expired.", field="assignment")
        else:
            result = _record(rater, assignment, pair, same, confidence, response_ms, now)
        if result is not None and then_next and not rater.blocked:
            result.next = next_locked(rater, then_next, now, held=1)
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
            mark_blocked(rater, "attention", now)
    elif pair.kind in Pair.GOLD_KINDS:
        rater.gold_count += 1
        rater.gold_correct += int(bool(correct))
        accuracy = rater.gold_correct / rater.gold_count
        if not rater.qualified:
            if rater.gold_count >= qualification_target(campaign):
                if accuracy >= campaign.pass_mark:
                    rater.qualified = True
                else:
                    mark_blocked(rater, "qualification", now)
        elif accuracy < campaign.pass_mark:
            mark_blocked(rater, "gold_accuracy", now)
    rater.save(update_fields=[
        "judgments_count", "too_fast_count", "attention_count", "attention_failed",
        "gold_count", "gold_correct", "qualified", "blocked", "blocked_reason", "blocked_at",
    ])
    if not campaign.labels_pending:  # as read with the rater lock; the UPDATE re-checks
        mark_labels_pending(campaign.pk)
    return SubmitResult(judgment, True, rater)
