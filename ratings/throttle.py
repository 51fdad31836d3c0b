"""Rate limits of the rater endpoints: fixed windows counted in the ``ratelimit`` cache.

One cache round trip per request whatever the number of limits: on Redis one pipeline of
INCR + EXPIRE per limit (the hot path's budget is one cache hit); elsewhere (the embedded
default, a per-process memory cache) add + incr. A window is ``floor(now / seconds)``, so
the wait until the next one is the Retry-After. Limits: settings.py, "Rate limits".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from deidplatform.lockout import client_ip

__all__ = ["client_ip", "hit"]

# (name, identity, (count, seconds)); a count of 0 switches that limit off.
Limit = tuple[str, str, tuple[int, int]]


def hit(limits: Sequence[Limit], now: float | None = None) -> int | None:
    """Count one request against each limit; the seconds to wait (Retry-After) when any
    is over its count in the current window, else None."""
    active = [(name, ident, count, seconds) for name, ident, (count, seconds) in limits
              if count > 0 and seconds > 0]
    if not active:
        return None
    now = time.time() if now is None else now
    cache = caches[settings.RATE_LIMIT_CACHE]
    keys = [f"rl:{name}:{ident}:{int(now // seconds)}" for name, ident, _, seconds in active]
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        pipe = client.pipeline(transaction=False)
        for key, (_, _, _, seconds) in zip(keys, active, strict=True):
            full = cache.make_and_validate_key(key)
            pipe.incr(full)
            pipe.expire(full, seconds + 1)
        counts = pipe.execute()[::2]
    else:
        counts = []
        for key, (_, _, _, seconds) in zip(keys, active, strict=True):
            if cache.add(key, 1, seconds + 1):
                counts.append(1)
            else:
                try:
                    counts.append(cache.incr(key))
                except ValueError:  # expired in between
                    cache.set(key, 1, seconds + 1)
                    counts.append(1)
    waits = [
        math.ceil(seconds - now % seconds) or 1
        for (_, _, count, seconds), n in zip(active, counts, strict=True) if n > count
    ]
    return max(waits) if waits else None
