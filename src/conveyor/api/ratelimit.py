"""Rate limits: moving windows in memory by default, shared through Redis when set. Rules
are parsed by the `limits` library, whose storage also backs the sign-in throttle."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from redis.commands.core import AsyncScript

from conveyor.errors import RateLimited

log = logging.getLogger("conveyor.ratelimit")


# Moving windows in sorted sets (score: the server's time; members unique per key). KEYS
# are the windows; ARGV holds limit, expiry (s) and cost for each. All or nothing: returns
# nothing when every window had room (each now holds `cost` more), else when the fullest
# one has room again (seconds since the epoch), having spent nothing.
_CHARGE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local wait = nil
for i = 1, #KEYS do
  local limit, expiry, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - expiry)
  local over = redis.call('ZCARD', KEYS[i]) + cost - limit
  if over > 0 then
    local freed = redis.call('ZRANGE', KEYS[i], over - 1, over - 1, 'WITHSCORES')
    local at = tonumber(freed[2]) + expiry
    if wait == nil or at > wait then wait = at end
  end
end
if wait ~= nil then return tostring(wait) end
for i = 1, #KEYS do
  local expiry, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local last = redis.call('INCRBY', KEYS[i] .. ':n', cost)
  for first = last - cost + 1, last, 500 do
    local entries = {}
    for n = first, math.min(first + 499, last) do
      entries[#entries + 1] = now
      entries[#entries + 1] = n
    end
    redis.call('ZADD', KEYS[i], unpack(entries))
  end
  redis.call('EXPIRE', KEYS[i], expiry)
  redis.call('EXPIRE', KEYS[i] .. ':n', expiry)
end
return false
"""


@dataclass(frozen=True, slots=True)
class Charge:
    """Spend `cost` units of `rule` (e.g. "600/minute") in the window of `keys`."""

    rule: str
    keys: tuple[str, ...]
    cost: int = 1
    unit: str = "requests"


# A rule's text to its item, parsed once (every submission names two rules).
_parse = functools.lru_cache(maxsize=256)(parse)


def storage_uri(redis_url: str | None) -> str:
    if not redis_url:
        return "async+memory://"
    return redis_url if redis_url.startswith("async+") else f"async+{redis_url}"


def _window(item: RateLimitItem) -> str:
    """ "minute", "10 second"... as the rule spells its window."""
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}"


@dataclass(slots=True)
class _Window:
    """One key's charges in its moving window: (time, cost) oldest first, and their sum."""

    expiry: float  # seconds: the window's length
    charges: deque[tuple[float, int]] = field(default_factory=deque)
    spent: int = 0

    def expire(self, now: float) -> None:
        charges, cutoff = self.charges, now - self.expiry
        while charges and charges[0][0] <= cutoff:
            self.spent -= charges.popleft()[1]

    def free_at(self, over: int) -> float:
        """When `over` units have left the window (the oldest charges go first)."""
        freed = 0
        for at, cost in self.charges:
            freed += cost
            if freed >= over:
                return at + self.expiry
        return time.time()  # pragma: no cover - `over` never exceeds what is spent


class MemoryWindows:
    """Moving windows in this process, one entry per charge (a batch of 500 jobs is one
    entry), so a check costs O(1) amortised, however high the limit. The `limits` library's
    memory storage keeps an entry per unit in a list it copies on every hit, and expires it
    through a thread hand-off per request: with the generous limits a busy API runs with,
    that was about a fifth of a single submit's CPU. Same semantics as the Redis script:
    every window tested, then every window spent, or none."""

    SWEEP_EVERY_S = 60.0

    def __init__(self) -> None:
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._swept = time.monotonic()

    def charge(self, items: Sequence[tuple[RateLimitItem, tuple[str, ...], int]]) -> float | None:
        """None when every window had room (each now holds its cost more), else when the
        fullest has room again (seconds since the epoch), having spent nothing."""
        now = time.time()
        self._sweep()
        wait: float | None = None
        windows = []
        for item, key, cost in items:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(float(item.get_expiry()))
            window.expiry = float(item.get_expiry())
            window.expire(now)
            over = window.spent + cost - item.amount
            if over > 0:
                at = window.free_at(over)
                wait = at if wait is None else max(wait, at)
            windows.append((window, cost))
        if wait is not None:
            return wait
        for window, cost in windows:
            window.charges.append((now, cost))
            window.spent += cost
        return None

    def reset(self) -> None:
        self._windows.clear()

    def _sweep(self) -> None:
        """Forget idle keys now and then, so one-off clients do not accumulate."""
        if time.monotonic() - self._swept < self.SWEEP_EVERY_S:
            return
        self._swept = time.monotonic()
        now = time.time()
        for key, window in list(self._windows.items()):
            window.expire(now)
            if not window.charges:
                del self._windows[key]


class RateLimits:
    """`check("5/minute", "login", ip)` raises RateLimited with a retry-after when over.

    With Redis, every API process counts in the same window. If Redis cannot be reached the
    request is let through (and logged): a limiter outage must not take the API down.
    """

    def __init__(self, redis_url: str | None = None, namespace: str = "conveyor") -> None:
        self.storage: Storage  # the sign-in throttle's; charges use `_memory` or the script
        self._memory: MemoryWindows | None = None
        if redis_url:
            # redis-py (already a dependency) rather than coredis, so the pool can be closed.
            self.storage = RedisStorage(
                storage_uri(redis_url), implementation="redispy", key_prefix=f"{namespace}:rl"
            )
        else:
            storage = storage_from_string(storage_uri(None))
            assert isinstance(storage, Storage)
            self.storage = storage
            self._memory = MemoryWindows()
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._namespace = namespace
        self._script: AsyncScript | None = None
        if isinstance(self.storage, RedisStorage) and isinstance(
            self.storage.bridge, RedispyBridge
        ):
            self._script = self.storage.bridge.storage.register_script(_CHARGE_LUA)

    async def check(self, rule: str, *keys: str, cost: int = 1, unit: str = "requests") -> None:
        """Spend `cost` units of `rule` (a batch of n jobs: n), all or none."""
        await self.charge(Charge(rule, keys, cost, unit))

    async def charge(self, *charges: Charge) -> None:
        """Spend every charge, or none when one has no room (RateLimited, with the longest
        wait): a submission spends a request and its jobs in one check, one round trip."""
        items = [(_parse(c.rule), c) for c in charges]
        for item, c in items:
            if c.cost > item.amount:  # would never fit, however long the caller waits
                raise RateLimited(
                    f"{c.cost} {c.unit} at once are more than the {item.amount} allowed per "
                    f"{_window(item)}; send fewer",
                    retry_after=item.get_expiry(),
                )
        try:
            reset_at = await (self._charge_redis(items) if self._script else self._charge(items))
        except Exception as exc:  # the shared store is down: fail open, loudly
            log.warning("rate limiter unavailable (%s); letting the request through", exc)
            return
        if reset_at is None:
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(f"too many requests; retry in {retry_after} s", retry_after=retry_after)

    async def _charge(self, items: Sequence[tuple[RateLimitItem, Charge]]) -> float | None:
        """In memory: every window tested, then all spent (nothing awaits in between)."""
        assert self._memory is not None  # no Redis: the memory windows were made
        return self._memory.charge([(item, c.keys, c.cost) for item, c in items])

    async def _charge_redis(self, items: Sequence[tuple[RateLimitItem, Charge]]) -> float | None:
        """In Redis: one script tests and spends every window atomically (one round trip)."""
        assert self._script is not None
        keys = [":".join((self._namespace, "rl", "charge", *c.keys)) for _, c in items]
        args: list[int] = []
        for item, c in items:
            args += [item.amount, item.get_expiry(), c.cost]
        answer = await self._script(keys=keys, args=args)
        return None if not answer else float(answer)

    async def reset(self) -> None:
        if self._memory is not None:
            self._memory.reset()
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
