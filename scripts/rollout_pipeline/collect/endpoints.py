"""Several endpoints for one agent: least-outstanding balancing with prompt affinity and a circuit breaker.

Affinity: every repeat of a prompt goes to the endpoint its first repeat went to, while that endpoint is
healthy, so the server's prefix cache is reused. An endpoint that fails `trip_after` times in a row is taken
out of rotation for `cooldown_s` (doubling while it keeps failing); the run goes on with the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Endpoint:
    url: str
    outstanding: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    cooldown_s: float = 0.0
    requests: int = 0
    failures: int = 0

    def healthy(self, now: float) -> bool:
        return now >= self.down_until


@dataclass
class EndpointPool:
    urls: list[str]
    trip_after: int = 3
    base_cooldown_s: float = 2.0
    max_cooldown_s: float = 60.0
    endpoints: list[Endpoint] = field(init=False)
    _affinity: dict[int, Endpoint] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.endpoints = [Endpoint(url.rstrip("/")) for url in self.urls]

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
        return {e.url: {"requests": e.requests, "failures": e.failures} for e in self.endpoints}
