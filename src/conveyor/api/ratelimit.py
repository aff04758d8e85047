"""Rate limits with the `limits` library: in memory by default, shared through Redis when set."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from conveyor.errors import RateLimited

log = logging.getLogger("conveyor.ratelimit")


def storage_uri(redis_url: str | None) -> str:
    if not redis_url:
        return "async+memory://"
    return redis_url if redis_url.startswith("async+") else f"async+{redis_url}"


def _window(item: RateLimitItem) -> str:
    """ "minute", "10 second"... as the rule spells its window."""
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}"


class RateLimits:
    """`check("5/minute", "login", ip)` raises RateLimited with a retry-after when over.

    With Redis, every API process counts in the same window. If Redis cannot be reached the
    request is let through (and logged): a limiter outage must not take the API down.
    """

    def __init__(self, redis_url: str | None = None, namespace: str = "conveyor") -> None:
        self.storage: Storage
        if redis_url:
            # redis-py (already a dependency) rather than coredis, so the pool can be closed.
            self.storage = RedisStorage(
                storage_uri(redis_url), implementation="redispy", key_prefix=f"{namespace}:rl"
            )
        else:
            storage = storage_from_string(storage_uri(None))
            assert isinstance(storage, Storage)
            self.storage = storage
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._namespace = namespace

    async def check(self, rule: str, *keys: str, cost: int = 1, unit: str = "requests") -> None:
        """Spend `cost` units of `rule` (a batch of n jobs: n), all or none."""
        item = parse(rule)
        if cost > item.amount:  # would never fit, however long the caller waits
            raise RateLimited(
                f"{cost} {unit} at once are more than the {item.amount} allowed per "
                f"{_window(item)}; send fewer",
                retry_after=item.get_expiry(),
            )
        identifiers = (self._namespace, *keys)
        try:
            allowed = await self._limiter.hit(item, *identifiers, cost=cost)
            if allowed:
                return
            stats = await self._limiter.get_window_stats(item, *identifiers)
        except Exception as exc:  # the shared store is down: fail open, loudly
            log.warning("rate limiter unavailable (%s); letting the request through", exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"too many requests; retry in {retry_after} s", retry_after=retry_after)

    async def reset(self) -> None:
        await self.storage.reset()

    async def aclose(self) -> None:
        """Close the Redis connections (nothing to close in memory)."""
        if isinstance(self.storage, RedisStorage) and isinstance(
            self.storage.bridge, RedispyBridge
        ):
            await self.storage.bridge.storage.aclose()
