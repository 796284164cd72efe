"""Per-principal rate limits: one token bucket per caller, its rate set by the caller's role.

``URBANOS_RATE_LIMIT`` is ``RATE`` (every caller) or ``ROLE=RATE,...`` with an optional
``default=RATE`` (callers whose roles are not listed), ``anonymous=RATE`` (callers without
credentials, and everyone when authentication is off) and ``burst=N`` (the bucket's size:
how many requests may come at once after a quiet spell; default one second's worth).
Rates are requests per second. A caller holding several roles gets the most generous rate.

Callers without credentials have no identity of their own, so they are counted per client
address: one noisy client cannot use up the allowance of every anonymous reader.

Buckets live in memory, per process: a bucket that has refilled is the same as none and
is dropped, and at most ``max_buckets`` are kept (the least recently used go first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from urbanos.core.policy import Principal, Role

#: the ``ROLE`` names besides the roles of ``core.policy``
DEFAULT = "default"
ANONYMOUS = "anonymous"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was computed (monotonic seconds)
    rate: float
    size: float

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.at) * self.rate >= self.size


@dataclass
class RateLimits:
    """The limits of one setting and the buckets of the callers seen."""

    rates: Mapping[str, float] = field(default_factory=dict)  # role, default, anonymous
    burst: float | None = None
    clock: Callable[[], float] = time.monotonic
    max_buckets: int = 100_000
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    @classmethod
    def parse(cls, setting: str, *, clock: Callable[[], float] = time.monotonic,
              max_buckets: int = 100_000) -> RateLimits:
        """The limits a ``URBANOS_RATE_LIMIT`` value names (empty: none); ValueError with a
        clear message on anything else."""
        rates: dict[str, float] = {}
        burst: float | None = None
        for part in (p.strip() for p in setting.split(",")):
            if not part:
                continue
            name, eq, value = part.rpartition("=")
            name = name.strip() if eq else DEFAULT
            number = _positive(value.strip(), part)
            if name == "burst":
                if number < 1:
                    raise ValueError(f"rate limit {part!r}: the burst is at least 1 request")
                burst = number
                continue
            if name not in {DEFAULT, ANONYMOUS} | {r.value for r in Role}:
                roles = ", ".join([r.value for r in Role] + [DEFAULT, ANONYMOUS])
                raise ValueError(f"rate limit {part!r}: unknown role {name!r} (one of {roles})")
            if name in rates:
                raise ValueError(f"rate limit: {name} given twice")
            rates[name] = number
        if burst is not None and not rates:
            raise ValueError("rate limit: a burst without any rate")
        return cls(rates=rates, burst=burst, clock=clock, max_buckets=max_buckets)

    @property
    def active(self) -> bool:
        return bool(self.rates)

    def rate_of(self, principal: Principal) -> float | None:
        """Requests per second allowed to ``principal`` (None: unlimited)."""
        if not principal.authenticated:
            return self.rates.get(ANONYMOUS, self.rates.get(DEFAULT))
        held = {role.value for roles in principal.roles.values() for role in roles}
        listed = [self.rates[r] for r in held if r in self.rates]
        return max(listed) if listed else self.rates.get(DEFAULT)

    def check(self, principal: Principal, client: str | None = None) -> float | None:
        """Take one request from ``principal``'s bucket: None when it may go on, else the
        seconds after which it may try again. ``client`` (its address) tells callers
        without credentials apart."""
        rate = self.rate_of(principal)
        if rate is None:
            return None
        key = principal.key if principal.authenticated else f"{principal.key}@{client or '?'}"
        size = self.burst if self.burst is not None else max(1.0, rate)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._trim(now)
            bucket = self._buckets[key] = _Bucket(size, now, rate, size)
        else:  # the rate follows the caller's roles of this request
            self._buckets.move_to_end(key)
            bucket.tokens = min(size, bucket.tokens + (now - bucket.at) * bucket.rate)
            bucket.at, bucket.rate, bucket.size = now, rate, size
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / rate

    def _trim(self, now: float) -> None:
        """Bound the memory: past ``max_buckets``, drop the buckets that have refilled
        (they change nothing), then the least recently used down to 90% of the bound, so
        the walk is not repeated for every new caller."""
        if len(self._buckets) < self.max_buckets:
            return
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        while len(self._buckets) > self.max_buckets * 9 // 10:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> int:
    """Whole seconds for a ``Retry-After`` header (at least 1)."""
    return max(1, math.ceil(seconds))


def _positive(text: str, part: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"rate limit {part!r}: {text!r} is not a number") from None
    if not number > 0 or math.isinf(number):
        raise ValueError(f"rate limit {part!r}: the rate must be a positive number")
    return number
