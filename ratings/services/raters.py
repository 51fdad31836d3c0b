"""Raters: creation, consent, and blocking (automatic QC verdicts and operators)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import locking
from ..errors import BLOCKED, NO_IDENTITY, NOT_THIS_BROWSER, RatingError
from ..models import Assignment, Campaign, Pair, Rater
from ..selectors import work_minimum_met
from .assignment import expire_holds, give_back_slots, next_locked
from .labels import mark_labels_pending

log = logging.getLogger("ratings.services")


def get_or_create_rater(
    campaign: Campaign,
    *,
    user: AbstractBaseUser | None = None,
    source: str = Rater.Source.LOCAL,
    external_id: str = "",
    meta: Mapping[str, str] | None = None,
    binding_hash: str = "",
) -> Rater:
    """Create or resume the rater for a user or an external participant id.

    ``binding_hash`` (external participants, ratings/binding.py): a new rater is bound to
    it, an unbound one is bound now; a rater bound to another browser is refused
    (``not_this_browser``), and so is a fresh identity from a browser bound to a blocked
    rater of this campaign (``blocked``)."""
    if user is None and not external_id:
        raise RatingError(
            NO_IDENTITY, "A user or an external participant id is needed.", field="rater"
        )
    if user is None and binding_hash and Rater.objects.filter(
        campaign=campaign, binding_hash=binding_hash, blocked=True
    ).exclude(source=source, external_id=external_id).exists():
        raise RatingError(BLOCKED, "This browser's participant was blocked.", field="rater")
    lookup: dict[str, Any] = (
        {"user": user} if user is not None else {"source": source, "external_id": external_id}
    )
    for _ in range(2):  # a second tab may create the same rater concurrently
        try:
            with transaction.atomic():
                rater, created = Rater.objects.get_or_create(
                    campaign=campaign, **lookup,
                    defaults={"external_meta": dict(meta or {}),
                              "binding_hash": binding_hash if user is None else "",
                              "source": source if user is None else Rater.Source.LOCAL,
                              # No qualification asked: qualified from the start, so the
                              # first "next" already takes the hot path.
                              "qualified": campaign.qualification_size == 0},
                )
            break
        except IntegrityError:
            continue
    else:  # pragma: no cover - two races in a row
        rater, created = Rater.objects.get(campaign=campaign, **lookup), False
    if user is None and binding_hash and not created:
        if not rater.binding_hash:  # first entry since binding exists: this browser claims it
            Rater.objects.filter(pk=rater.pk, binding_hash="").update(binding_hash=binding_hash)
            rater.refresh_from_db(fields=["binding_hash"])
        if not hmac.compare_digest(rater.binding_hash, binding_hash):
            raise RatingError(NOT_THIS_BROWSER, "This participant id is in use in another browser.",
                              field="rater")
    if not created and meta and any(rater.external_meta.get(k) != v for k, v in meta.items()):
        Rater.objects.filter(pk=rater.pk).update(external_meta={**rater.external_meta, **meta})
    return rater


def record_consent(rater: Rater) -> Rater:
    """Note the rater's consent (once; a second call keeps the first time)."""
    if rater.consented_at is None:
        rater.consented_at = timezone.now()
        rater.save(update_fields=["consented_at"])
    return rater


def record_declined(rater: Rater) -> Rater:
    """Note that the rater declined the consent text (once): screened out for good. A
    rater who already consented keeps that (the decline button is on the consent page)."""
    if rater.declined_at is None and rater.consented_at is None:
        rater.declined_at = timezone.now()
        Rater.objects.filter(pk=rater.pk, declined_at__isnull=True,
                             consented_at__isnull=True).update(declined_at=rater.declined_at)
    return rater


def finish_session(rater_id: int, *, now: datetime | None = None) -> str:
    """The end page's verdict: ``finished`` (the rater is given the completion code, from
    now on for good) when no more work is theirs, or when they ask to stop having judged
    the campaign's minimum of real pairs; else the status of ``next_assignments`` (``ok``:
    go back to work). Finishing hands the rater's open holds back to the other raters
    (SKIP LOCKED: a busy pair's hold just expires)."""
    now = now or timezone.now()
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        if rater.finished_at is not None:
            return "finished"
        status = next_locked(rater, 0, now, held=0).status
        if status == "ok" and rater.qualified and work_minimum_met(rater, rater.campaign):
            status = "finished"
        if status != "finished":
            return status
        pair_ids = list(rater.assignments.filter(state=Assignment.State.ISSUED)
                        .values_list("pair_id", flat=True))
        expire_holds(locking.lock_pairs(pair_ids, skip_locked=True), now, Q(rater=rater))
        rater.finished_at = now
        rater.save(update_fields=["finished_at"])
    return "finished"


def mark_blocked(rater: Rater, reason: str, now: datetime) -> None:
    """Set the block on the instance; the caller holds the rater's lock and saves it."""
    rater.blocked, rater.blocked_reason, rater.blocked_at = True, reason, now
    log.info("rater %s blocked: %s", rater.public_id, reason)


def block_rater(rater_id: int, reason: str = "operator", *, now: datetime | None = None) -> Rater:
    """Block a rater by hand (operators); their judgments stay but leave the labels."""
    now = now or timezone.now()
    with transaction.atomic():
        rater = locking.lock_rater(rater_id)
        if not rater.blocked:
            mark_blocked(rater, reason, now)
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
        judged = [] if rater.slots_released else _judged_deid_pairs(rater)
        pairs = locking.lock_pairs(hold_pairs + judged)
        expire_holds(pairs, now, Q(rater=rater))
        give_back_slots(pairs, judged)
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
            for p in locking.lock_pairs(_judged_deid_pairs(rater)):
                Pair.objects.filter(pk=p.pk).update(taken=F("taken") + 1)
        rater.blocked, rater.blocked_reason, rater.blocked_at = False, "", None
        rater.slots_released = False
        rater.save(update_fields=["blocked", "blocked_reason", "blocked_at", "slots_released"])
    mark_labels_pending(rater.campaign_id)
    return rater


def _judged_deid_pairs(rater: Rater) -> list[int]:
    """Pair ids of the rater's deid judgments: the slots a block releases (one each)."""
    return list(
        rater.judgments.filter(pair__kind=Pair.Kind.DEID).values_list("pair_id", flat=True)
    )
