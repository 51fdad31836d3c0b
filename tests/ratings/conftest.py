from __future__ import annotations

import pytest
from django.test import Client

from ratings.models import Campaign, Rater

from .factories import add_pairs, make_campaign, make_images
from .limits import fresh_rate_limits  # noqa: F401
from .paths import pytest_configure, pytest_generate_tests, rating_path  # noqa: F401


@pytest.fixture
def images(db):
    return make_images(6)


@pytest.fixture
def campaign(db) -> Campaign:
    return make_campaign()


@pytest.fixture
def rater_client(db):
    """A client whose session is an external (Prolific) rater of a campaign."""

    def make(campaign: Campaign, pid: str = "PID1", consent: bool = True) -> Client:
        client = Client(enforce_csrf_checks=True)
        r = client.get(f"/rate/{campaign.slug}/", {"PROLIFIC_PID": pid, "STUDY_ID": "S",
                                                   "SESSION_ID": "X"})
        assert r.status_code == 302, r.content
        client.rater = Rater.objects.get(campaign=campaign, external_id=pid)
        if consent:
            client.rater.consented_at = client.rater.created
            client.rater.save()
        return client

    return make


__all__ = ["add_pairs", "make_campaign", "make_images"]
