"""Reads of the jobs domain."""

from __future__ import annotations

from deidplatform.errors import NOT_FOUND, AppError
from ratings.models import Campaign


def campaign_by_id(campaign_id: int | None, *, field: str = "campaign") -> Campaign | None:
    """The campaign a job's pairs go to; None when none was asked for."""
    if campaign_id is None:
        return None
    try:
        return Campaign.objects.get(pk=campaign_id)
    except Campaign.DoesNotExist:
        raise AppError(NOT_FOUND, "No such campaign.", field=field) from None
