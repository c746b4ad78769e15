"""Several endpoints for one agent: least-outstanding balancing with prompt affinity, a circuit breaker, and an
adaptive concurrency limit each (limits.py).

Affinity: every repeat of a prompt goes to the endpoint its first repeat went to, while that endpoint is
healthy, so the server's prefix cache is reused. An endpoint that fails `trip_after` times in a row is taken
out of rotation for `cooldown_s` (doubling while it keeps failing); the run goes on with the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rollout_pipeline.collect.limits import AdaptiveLimit


@dataclass
class Endpoint:
    url: str
    outstanding: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    cooldown_s: float = 0.0
    requests: int = 0
    failures: int = 0
    limit: AdaptiveLimit = field(default_factory=lambda: AdaptiveLimit(1024))

    def healthy(self, now: float) -> bool:
        """Not tripped by the circuit breaker, and not paused by a Retry-After (a retry may go elsewhere)."""
        return now >= self.down_until and now >= self.limit.paused_until


@dataclass
class EndpointPool:
    urls: list[str]
    ceiling: int = 1024  # requests in flight per endpoint at most: the run's parallelism
    trip_after: int = 3
    base_cooldown_s: float = 2.0
    max_cooldown_s: float = 60.0
    endpoints: list[Endpoint] = field(init=False)
    _affinity: dict[int, Endpoint] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.endpoints = [Endpoint(url.rstrip("/"), limit=AdaptiveLimit(self.ceiling)) for url in self.urls]
        # When any endpoint last answered a request well: a rollout keeps retrying while the pool makes progress.
        self.last_success = time.monotonic()

    def acquire(self, task_index: int) -> Endpoint:
        """The endpoint for this prompt's next request (counted as outstanding until release)."""
        if len(self.endpoints) == 1:  # nothing to choose: skip the clock and the affinity table
            chosen = self.endpoints[0]
            chosen.outstanding += 1
            chosen.requests += 1
            return chosen
        now = time.monotonic()
        chosen = self._affinity.get(task_index)
        if chosen is None or not chosen.healthy(now):
            healthy = [e for e in self.endpoints if e.healthy(now)]
            # With every endpoint down, try the one that comes back first rather than stall the run.
            candidates = healthy or [min(self.endpoints, key=lambda e: e.down_until)]
            chosen = min(candidates, key=lambda e: e.outstanding)
            if len(self.endpoints) > 1:
                self._affinity[task_index] = chosen
        chosen.outstanding += 1
        chosen.requests += 1
        return chosen

    def release(self, endpoint: Endpoint, ok: bool) -> None:
        """Record the outcome of one request on `endpoint`."""
        endpoint.outstanding -= 1
        if ok:
            self.last_success = time.monotonic()
            endpoint.consecutive_failures = 0
            endpoint.cooldown_s = 0.0
            return
        endpoint.failures += 1
        endpoint.consecutive_failures += 1
        if len(self.endpoints) > 1 and endpoint.consecutive_failures >= self.trip_after:
            endpoint.cooldown_s = min(self.max_cooldown_s, max(self.base_cooldown_s, endpoint.cooldown_s * 2))
            endpoint.down_until = time.monotonic() + endpoint.cooldown_s
            endpoint.consecutive_failures = 0

    def forget(self, task_index: int) -> None:
        """The prompt is finished: drop its affinity entry so memory stays bounded."""
        self._affinity.pop(task_index, None)

    def summary(self) -> dict:
        """Per endpoint: requests, failures, and the adaptive limit's trace (429s and overloads, lowest and final
        limit, time paused by Retry-After). Several processes' summaries add up key by key."""
        return {
            e.url: {
                "requests": e.requests,
                "failures": e.failures,
                **{
                    f"limit_{k}" if k in ("ceiling", "low", "final", "decreases") else k: v
                    for k, v in e.limit.summary().items()
                },
            }
            for e in self.endpoints
        }

    def current_limit(self) -> int:
        """Requests the endpoints take in flight now, added up (what the progress line shows)."""
        return sum(e.limit.current for e in self.endpoints)
