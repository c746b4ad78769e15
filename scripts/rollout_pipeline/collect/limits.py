"""Adaptive concurrency per endpoint: additive increase, multiplicative decrease (AIMD), and Retry-After pauses.

A rate-limited server (a hosted API, a gateway in front of a vLLM cluster) answers 429 when too many requests
are in flight. Hammering it wastes quota and time, so each endpoint has a limit on requests in flight, as TCP's
congestion window and Envoy's and Netflix's adaptive concurrency limiters do. `num_samples_in_parallel` is its
ceiling. Like TCP it starts small (INITIAL_LIMIT) and doubles per round trip of successes ("slow start") up to a
threshold, the ceiling at first; then it grows by one per round trip. An overload signal (429, or a 503 that
says come back later) cuts it to DECREASE of itself and sets the threshold there, once per window: overloads of requests sent
before the last cut are the same congestion, already answered. Starting small matters: 256 requests sent at
once to a server that takes 16 are 240 wasted 429s before the first answer arrives.
A Retry-After pauses the endpoint for every request, not only the one that got it.
"""
from __future__ import annotations

import asyncio
import collections
import time


INITIAL_LIMIT = 64  # doubling per round trip reaches 1,024 in 4 round trips
# The cut on an overload: TCP Reno halves, CUBIC keeps 0.7. Halving leaves the limit between K/2 and K for a
# server that takes K, about 0.75 K on average; 0.7 keeps it between 0.7 K and K (bench/rate_limits.py).
DECREASE = 0.7


class AdaptiveLimit:
    """How many requests one endpoint may have in flight now; `acquire` waits for a slot (and out a pause)."""

    def __init__(self, ceiling: int, floor: int = 1) -> None:
        self.ceiling = ceiling
        self.floor = floor
        self.limit = float(min(ceiling, INITIAL_LIMIT))
        self.threshold = float(ceiling)  # below it, slow start: +1 per success (doubling per round trip)
        self.in_flight = 0
        self.paused_until = 0.0
        self._issued = 0          # requests let through so far: each gets this as its ticket
        self._window_start = 0    # tickets below this were sent before the last cut
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self.low = ceiling   # the trace the stats report: lowest limit, and how often it was cut
        self.decreases = 0
        self.overloads = 0
        self.paused_s = 0.0

    @property
    def current(self) -> int:
        return max(self.floor, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns the request's ticket (for `overloaded`)."""
        woken = False  # a waiter handed a turn takes a free slot even with others still queued behind it
        while True:
            wait = self.paused_until - time.monotonic()
            if wait > 0:
                self.paused_s += wait
                await asyncio.sleep(wait)
                continue
            if self.in_flight < self.current and (woken or not self._waiters):
                self.in_flight += 1
                self._issued += 1
                return self._issued - 1
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._wake()  # free slots and a queue (say, after a pause ended): the front of the queue goes
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # handed a turn we will not use: pass it on
                raise
            woken = True

    def release(self, succeeded: bool) -> None:
        self.in_flight -= 1
        if succeeded and self.limit < self.ceiling:
            step = 1.0 if self.limit < self.threshold else 1.0 / self.limit
            self.limit = min(float(self.ceiling), self.limit + step)
        self._wake()

    def overloaded(self, ticket: int, retry_after: float | None) -> None:
        """An overload signal for the request with `ticket`: cut the limit (once per window) and pause for
        Retry-After."""
        now = time.monotonic()
        self.overloads += 1
        if ticket >= self._window_start:
            self._window_start = self._issued
            self.limit = self.threshold = max(float(self.floor), self.limit * DECREASE)
            self.low = min(self.low, self.current)
            self.decreases += 1
        if retry_after:
            self.paused_until = max(self.paused_until, now + retry_after)

    def _wake(self) -> None:
        # Hand turns to waiters while there are free slots; each re-checks the limit and the pause itself.
        free = self.current - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def summary(self) -> dict:
        return {"ceiling": self.ceiling, "low": self.low, "final": self.current, "decreases": self.decreases,
                "overloads": self.overloads, "paused_s": round(self.paused_s, 3)}
