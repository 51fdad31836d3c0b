"""Every rater test starts with empty rate-limit counters and login-failure counts.

The limits (settings "Rate limits") are on in tests, as deployed; their counters live in
the ``ratelimit`` cache (process memory here), which would otherwise carry one test's
entries from 127.0.0.1 into the next. Imported by tests/ratings/conftest.py and
tests/browser/conftest.py."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import caches


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    caches[settings.RATE_LIMIT_CACHE].clear()
