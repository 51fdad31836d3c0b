"""Django's Redis cache backend, minus a per-call cost the rater hot path noticed.

``django.core.cache.backends.redis.RedisCacheClient.get_client`` builds a new
``redis.Redis`` object (and its table of response callbacks) on every cache call; for the
session read that every rater request makes, that was as much CPU as the GET itself. The
client objects are thread-safe wrappers around the connection pool, so one per pool is
kept and reused. Behaviour is otherwise Django's (same serializer, keys, pools, options).
Used for the ``sessions`` cache (settings.py, SESSION_CACHE_URL).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient


class ReusingRedisCacheClient(RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient
