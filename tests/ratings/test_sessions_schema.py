"""Pieces of the hot-path work that run on every backend: the OpenAPI documentation of the
rater endpoints (now wrapped) and the Redis session cache (ratings/cache.py)."""

from __future__ import annotations

import os
import uuid

import pytest
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.rating_paths()  # no rater endpoint here: one run


def test_rater_endpoints_are_still_documented():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    ops = {
        op["operationId"]: (path, method)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "operationId" in op
    }
    assert ops["ratings_next"] == ("/api/ratings/rate/{slug}/next", "post")
    assert ops["ratings_submit_judgment"] == (
        "/api/ratings/rate/{slug}/assignments/{assignment}/judgment", "post")
    submit = schema["paths"]["/api/ratings/rate/{slug}/assignments/{assignment}/judgment"]["post"]
    assert {"200", "201", "403", "404", "409"} <= set(submit["responses"])
    assert "JudgmentIn" in str(submit["requestBody"])


def _redis_url() -> str:
    url = os.environ.get("SESSION_CACHE_URL") or os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        pytest.skip("no Redis configured (SESSION_CACHE_URL or CELERY_BROKER_URL)")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"Redis not reachable at {url}")
    return url


def test_reusing_redis_cache_behaves_like_djangos():
    from ratings.cache import RedisCache

    cache = RedisCache(_redis_url(), {"KEY_PREFIX": f"test-{uuid.uuid4().hex}"})
    assert cache._cache.get_client() is cache._cache.get_client()  # one client per pool
    assert cache.get("k") is None
    cache.set("k", {"a": 1}, 30)
    assert cache.get("k") == {"a": 1}
    assert cache.add("k", 2, 30) is False
    cache.delete("k")
    assert cache.get("k", "gone") == "gone"


@pytest.mark.django_db
def test_cached_db_sessions_on_redis_still_revoke():
    url = _redis_url()
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {"BACKEND": "ratings.cache.RedisCache", "LOCATION": url,
                     "KEY_PREFIX": f"test-{uuid.uuid4().hex}"},
    }
    with override_settings(CACHES=caches, SESSION_CACHE_ALIAS="sessions",
                           SESSION_ENGINE="django.contrib.sessions.backends.cached_db"):
        from django.contrib.sessions.backends.cached_db import SessionStore
        from django.contrib.sessions.models import Session

        s = SessionStore()
        s["ratings_raters"] = {"c": "a" * 32}
        s.save()
        key = s.session_key
        assert Session.objects.filter(session_key=key).exists()  # the database is the record
        assert SessionStore(key).load() == {"ratings_raters": {"c": "a" * 32}}
        s.cycle_key()  # as on a new study link: the old key no longer opens the session
        assert SessionStore(key).load() == {}
        s.flush()
        assert SessionStore(s.session_key).load() == {}
