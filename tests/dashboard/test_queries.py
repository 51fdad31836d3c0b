"""No N+1: every page's query count stays the same when its tables grow (a few rows, then
many more made with the benchmark's bulk filler), and stays under a small ceiling. Times
are measured by bench/dashboard.py, not here."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from bench.dashboard import fill

pytestmark = pytest.mark.django_db

SMALL = dict(jobs=30, judgments=300, versions=3, raters=10, rounds=3, iterations=5, traced_jobs=3)
LARGE = dict(jobs=400, judgments=4000, versions=20, raters=80, rounds=6, iterations=60,
             traced_jobs=10)
CEILING = 20  # session, user and permissions included


def urls(w: dict) -> dict[str, str]:
    r, c = w["round"], w["campaign"]
    return {
        "overview": reverse("dashboard:overview"),
        "live_overview": reverse("dashboard:live-overview"),
        "round": reverse("dashboard:round", args=[r.pk]),
        "live_round": reverse("dashboard:live-round", args=[r.pk]),
        "jobs": reverse("dashboard:jobs"),
        "jobs_filtered": reverse("dashboard:jobs") + f"?status=succeeded&round={r.pk}",
        "gallery": reverse("dashboard:gallery") + f"?round={r.pk}",
        "job": reverse("dashboard:job", args=[w["job"].pk]),
        "campaign": reverse("dashboard:campaign", args=[c.pk]),
        "proxy": reverse("dashboard:proxy"),
    }


def counts(client, pages: dict[str, str]) -> dict[str, int]:
    out = {}
    for name, url in pages.items():
        with CaptureQueriesContext(connection) as q:
            assert client.get(url).status_code == 200, name
        out[name] = len(q)
    return out


def test_query_counts_do_not_grow_with_rows(staff_client, django_assert_max_num_queries):
    small = fill(**SMALL, series="small")
    before = counts(staff_client, urls(small))
    large = fill(**LARGE, series="large")
    after = counts(staff_client, urls(large))
    assert after == before
    for name, url in urls(large).items():
        with django_assert_max_num_queries(CEILING):
            assert staff_client.get(url).status_code == 200, name
