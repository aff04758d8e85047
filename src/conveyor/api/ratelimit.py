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

    @property
    def namespace(self) -> str:
        return self._namespace


# ---- the per-account sign-in throttle (issue 14) ---------------------------------------------
KNOWN_CLIENT = parse("1/30 days")  # a client that signed in as a login is known for this long


class SigninThrottle:
    """Per-account sign-in limits for one request's client (`services.accounts.throttle`).

    Failed attempts per login are counted in ``rule``'s moving window (every client
    together); over it, further attempts for that login answer 429 without a password
    check until the window has room again (at most the window). A client address that
    signed in as that login in the last 30 days is exempt, so guessers elsewhere cannot
    lock the owner out of their usual address; it still meets the per-IP limit. Unknown
    logins are counted alike, so a 429 says nothing about who is registered. Like
    `RateLimits`, it fails open when the shared store is down.
    """

    def __init__(self, limits: RateLimits, rule: str, client: str) -> None:
        self._limiter = MovingWindowRateLimiter(limits.storage)
        self._rule = parse(rule)
        self._namespace = limits.namespace
        self._client = client

    async def check(self, login: str) -> None:
        failures = (self._namespace, "login-account", login)
        try:
            if await self._known(login) or await self._limiter.test(self._rule, *failures):
                return
            stats = await self._limiter.get_window_stats(self._rule, *failures)
        except Exception as exc:
            log.warning("rate limiter unavailable (%s); not throttling sign-in", exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"too many failed sign-ins for this account; retry in {retry_after} s",
            retry_after=retry_after,
        )

    async def failed(self, login: str) -> None:
        await self._hit(self._rule, "login-account", login)

    async def succeeded(self, login: str) -> None:
        await self._hit(KNOWN_CLIENT, "login-known", login, self._client)

    async def _known(self, login: str) -> bool:
        item = (self._namespace, "login-known", login, self._client)
        return not await self._limiter.test(KNOWN_CLIENT, *item)

    async def _hit(self, item: RateLimitItem, *keys: str) -> None:
        try:
            await self._limiter.hit(item, self._namespace, *keys)
        except Exception as exc:
            log.warning("rate limiter unavailable (%s); sign-in not counted", exc)
