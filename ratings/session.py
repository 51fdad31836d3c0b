"""Which rater a browser session acts as: campaign slug -> rater public id (hex), kept in
the session under SESSION_KEY. Shared by the pages, the DRF views and the hot path."""

from __future__ import annotations

from typing import Any

from . import binding, selectors
from .models import Campaign, Rater

SESSION_KEY = "ratings_raters"


def session_rater(request: Any, campaign: Campaign) -> Rater | None:
    """The rater this browser session acts as in this campaign, if any."""
    raters = request.session.get(SESSION_KEY, {})
    rater = selectors.rater_for_campaign(campaign, raters.get(campaign.slug))
    if rater is None and request.user.is_authenticated:
        rater = Rater.objects.filter(campaign=campaign, user=request.user).first()
    return rater


def remember_rater(request: Any, campaign: Campaign, rater: Rater) -> None:
    """From now on this session acts as ``rater`` in ``campaign``."""
    raters = dict(request.session.get(SESSION_KEY, {}))
    raters[campaign.slug] = rater.public_id.hex
    request.session[SESSION_KEY] = raters
    # The hot path checks the binding cookie against this note ("": an unbound rater).
    binding.remember(request, campaign.slug, rater.binding_hash)
