"""When to try a request again, and how long to wait.

Only outcomes known not to have sent anything are retried: transport failures before the body left,
429 (throttled before processing) and 503 carrying ``Retry-After``. A timeout, reset or 500/502/504 after
the body went out is reported as "may have been sent", never resent: a duplicate mail is worse than a late
one. Idempotent calls (GET, DELETE, upload chunks) may additionally retry those ambiguous outcomes.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import GraphMailError, TransportError


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: integer or fractional seconds, or an HTTP date.

    ``now`` is the wall-clock epoch used to turn a date into a delay. Unparseable values give ``None``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` counts the first try. Backoff is ``backoff * 2**(n-1)`` capped at ``max_backoff``, with
    up to ``jitter`` (a fraction) added at random; a server's ``Retry-After`` wins over backoff. A wait
    that would end after the mail's deadline, or exceed ``max_retry_after``, is not taken: the error goes
    up with its ``retry_after`` so the caller's queue retries later."""

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def is_retryable(self, error: GraphMailError, idempotent: bool = False) -> bool:
        """Whether ``error`` is an outcome known not to have sent anything (or harmless to repeat)."""
        if isinstance(error, TransportError):
            return error.nothing_sent or idempotent
        status = error.status or 0
        if status == 429:
            return True
        if status == 503 and error.retry_after is not None:
            return True
        return idempotent and status in (500, 502, 503, 504)

    def backoff_delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.max_backoff, self.backoff * (2 ** max(0, attempt - 1)))
        return base * (1 + self.jitter * rand())

    def next_delay(
        self,
        error: GraphMailError,
        attempt: int,
        now: float,
        deadline: Optional[float],
        idempotent: bool = False,
        rand: Callable[[], float] = random.random,
    ) -> Optional[float]:
        """Seconds to sleep before attempt ``attempt + 1``, or ``None`` to give up and raise ``error``."""
        if attempt >= self.attempts or not self.is_retryable(error, idempotent):
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = error.retry_after
        else:
            delay = self.backoff_delay(attempt, rand)
        if deadline is not None and now + delay >= deadline:
            return None
        return delay


NO_RETRY = RetryPolicy(attempts=1)
