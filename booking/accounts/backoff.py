"""The sign-in back-off: after repeated failed sign-ins an email, and an address, must wait
before trying again, and longer each time.

After ``failures`` consecutive failures for one email (``address_failures`` for one client
address) every further attempt is refused for ``base`` seconds; each failure after that
doubles the wait, up to ``cap``. A success clears both counts. The email is counted by its
digest whether or not an account has it, so the answers (a 401 for a wrong password, the
429 ``login-backoff`` with its Retry-After) are the same for an unknown email as for a known
one: the back-off tells nobody which emails are accounts.

An attempt is counted when it starts, in the same Lua script that checks the wait (one
round trip, atomic), not after its password check: a burst of concurrent guesses is cut off
at the threshold instead of all passing a check made before any of them failed. A success
then clears the count it added. Both keys share a hash tag, so the script stays on one
Redis Cluster slot.

When Redis cannot be asked the back-off is skipped (fails open): sign-in still costs an
Argon2 verification per attempt and the per-address rate limit, and fans can still sign in
during the outage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from booking import metrics
from booking.errors import InvalidCredentials, LoginBackoff, RateLimited
from booking.rate_limits import Group, Limiter, account_identity, address_identity
from booking.redis_client import Breaker
from booking.settings import Settings

log = logging.getLogger("boxoffice.rate_limits")

# A run of failures is forgotten a day after its last attempt.
FORGET_AFTER_SECONDS = 86_400

# KEYS: the email's and the address's counts. ARGV: their thresholds (0: not counted), the
# first wait and the longest, in seconds; how long a count is kept. Returns 0 when the
# attempt may go ahead (and is counted), else the milliseconds still to wait.
_BEGIN = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local wait = 0
for i = 1, 2 do
  local until_ = tonumber(redis.call('HGET', KEYS[i], 'until') or '0')
  if until_ - now > wait then wait = until_ - now end
end
if wait > 0 then return math.ceil(wait * 1000) end
local base, cap, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, 2 do
  local threshold = tonumber(ARGV[i])
  if threshold > 0 then
    local n = redis.call('HINCRBY', KEYS[i], 'n', 1)
    if n >= threshold then
      local block = math.min(cap, base * 2 ^ (n - threshold))
      redis.call('HSET', KEYS[i], 'until', tostring(now + block))
    end
    redis.call('EXPIRE', KEYS[i], keep)
  end
end
return 0
"""


@dataclass(frozen=True)
class BackoffPolicy:
    failures: int
    address_failures: int
    base: int
    cap: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BackoffPolicy | None:
        """None when there is no back-off: rate limits off, or both thresholds 0."""
        if not settings.rate_limits or not (
            settings.login_backoff_failures or settings.login_backoff_address_failures
        ):
            return None
        return cls(
            settings.login_backoff_failures,
            settings.login_backoff_address_failures,
            settings.login_backoff_seconds,
            max(settings.login_backoff_seconds, settings.login_backoff_max_seconds),
        )


def _keys(email: str, address: str) -> list[str]:
    return [
        f"signin-backoff:{{signin}}:account:{account_identity(email)}",
        f"signin-backoff:{{signin}}:address:{address_identity(address)}",
    ]


class SignInGuard:
    """What stands before a password check: the per-account rate limit of ``group`` (the
    per-address one is the API's, counted before the request is read) and the back-off."""

    def __init__(
        self,
        redis: Redis,
        breaker: Breaker,
        limiter: Limiter,
        group: Group | None,
        backoff: BackoffPolicy | None,
    ) -> None:
        self._redis = redis
        self._breaker = breaker
        self._limiter = limiter
        self._group = group
        self._backoff = backoff
        self._begin = redis.register_script(_BEGIN)

    @asynccontextmanager
    async def attempt(self, email: str, address: str) -> AsyncIterator[None]:
        """Around one sign-in: raises before the body runs if the attempt must wait; an
        ``InvalidCredentials`` from the body counts as a failure, a body that returns clears
        the counts.

        Raises:
            RateLimited: the email's sign-in rate limit is reached.
            LoginBackoff: the email or the address is in its back-off.
        """
        if self._group is not None:
            refused = await self._limiter.check(self._group, {"account": account_identity(email)})
            if refused is not None:
                raise RateLimited(refused.policy.name, refused.retry_after)
        counted = self._backoff is not None and await self._start(email, address)
        try:
            yield
        except InvalidCredentials:
            # The attempt stays counted: that is the failure. So does one that ended in any
            # other error (the database away): it proved nothing about the password.
            raise
        if counted:
            await self._clear(email, address)

    async def _start(self, email: str, address: str) -> bool:
        """Check the waits and count the attempt; whether it was counted.

        Raises:
            LoginBackoff.
        """
        backoff = self._backoff
        assert backoff is not None
        if not self._breaker.allows():
            return False
        try:
            wait_ms = int(
                await self._begin(
                    keys=_keys(email, address),
                    args=[
                        backoff.failures,
                        backoff.address_failures,
                        backoff.base,
                        backoff.cap,
                        FORGET_AFTER_SECONDS,
                    ],
                )
            )
        except (RedisError, OSError) as error:
            log.warning("sign-in back-off skipped, Redis unreachable: %s", error)
            self._breaker.failed()
            return False
        self._breaker.succeeded()
        if wait_ms > 0:
            metrics.RATE_LIMITED.labels("login-backoff").inc()
            raise LoginBackoff(max(1, math.ceil(wait_ms / 1000)))
        return True

    async def _clear(self, email: str, address: str) -> None:
        if not self._breaker.allows():
            return
        try:
            await self._redis.delete(*_keys(email, address))
        except (RedisError, OSError) as error:
            log.warning("sign-in back-off not cleared, Redis unreachable: %s", error)
            self._breaker.failed()
        else:
            self._breaker.succeeded()
