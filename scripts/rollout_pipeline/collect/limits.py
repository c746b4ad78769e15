"""Adaptive concurrency per endpoint: a limit cut only on evidence of overload, and Retry-After per request.

A rate-limited server (a hosted API, a gateway in front of a vLLM cluster) answers 429 when too many requests
are in flight. Hammering it wastes quota and time, so each endpoint has a limit on requests in flight, as TCP's
congestion window and Envoy's and Netflix's adaptive concurrency limiters do. `num_samples_in_parallel` is its
ceiling. Like TCP it starts small (INITIAL_LIMIT) and doubles per round trip of successes ("slow start") up to a
threshold, the ceiling at first; then it grows by one per round trip.

A 429 or a 503 is not proof of overload: a flaky proxy or load balancer sends them at random, and a limit cut
for each would fall to 1 against a server that never had more than a few requests in flight. Overload from
concurrency rises with it, as a gradient limiter judges (Netflix's, TCP Vegas): so the limit remembers, for
the recent answers, how many requests were in flight when each was sent (its level) and whether the server
took it (any answer but an overload) or turned it away. An overload cuts the limit, once per window (the
requests sent since the last cut), only if the server turned away more than CONGESTED_SHARE of the requests
sent at its level or above (MIN_EVIDENCE answered at least): past a server's capacity nearly every extra
request is turned away, while random faults fall on every level alike and never move the limit. The cut goes
to DECREASE of the limit, but not below the highest level at which the server took nearly every request (it
showed it serves that many), unless that would not lower the limit at all.

A Retry-After answers the request that got it: that request waits it out (collect.transport) and the others go
on. The whole endpoint pauses only when the server says it is overloaded as a whole: a 503 with a Retry-After,
or overloads and no success at all for WHOLE_OVERLOAD_S.
"""

from __future__ import annotations

import asyncio
import collections
import time

INITIAL_LIMIT = 64  # doubling per round trip reaches 1,024 in 4 round trips
# The cut on an overload: TCP Reno halves, CUBIC keeps 0.7. Halving leaves the limit between K/2 and K for a
# server that takes K, about 0.75 K on average; 0.7 keeps it between 0.7 K and K (bench/rate_limits.py).
DECREASE = 0.7
# Back at the limit that last overloaded the server, it grows this many times slower: each probe costs 429s (and
# a Retry-After may keep its request waiting past the end of the run), and that level was just proven too many.
PLATEAU_ROUNDS = 8
HISTORY = 512  # recent answers the evidence is read from
MIN_EVIDENCE = 12  # answers at a level (or above) needed to judge it
# The share of overloads, among the answers to requests sent with as many in flight or more, above which they are
# congestion. A flaky proxy's 429s and 503s stay under it (the 25 % fault mix holds 9 % of them); a
# server that takes K at once turns away far more of what is sent beyond K.
CONGESTED_SHARE = 0.2
WHOLE_OVERLOAD_S = 1.0  # overloads with no success for this long: the server is overloaded as a whole


class AdaptiveLimit:
    """How many requests one endpoint may have in flight now; `acquire` waits for a slot (and out a pause)."""

    def __init__(self, ceiling: int, floor: int = 1) -> None:
        self.ceiling = ceiling
        self.floor = floor
        self.limit = float(min(ceiling, INITIAL_LIMIT))
        self.threshold = float(ceiling)  # below it, slow start: +1 per success (doubling per round trip)
        self.in_flight = 0
        self.paused_until = 0.0
        self._issued = 0  # requests let through so far: each gets this as its ticket
        self._window_start = 0  # tickets below this were sent before the last cut
        self._level: dict[int, int] = {}  # ticket -> requests in flight when it was sent (itself included)
        # The recent answers as (level, turned away), and their counts per level: taken, turned away.
        self._answers: collections.deque[tuple[int, bool]] = collections.deque()
        self._taken = [0] * (ceiling + 1)
        self._turned_away = [0] * (ceiling + 1)
        self._last_success = time.monotonic()  # (the start counts as one: no pause before the first answer)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._overloaded_at = float("inf")  # the limit the last cut came down from
        self.low = ceiling  # the trace the stats report: lowest limit, and how often it was cut
        self.decreases = 0
        self.overloads = 0
        self.tolerated = 0  # overloads that were no evidence of congestion: the limit stayed
        self.paused_s = 0.0  # time requests waited on Retry-After: their own, and the endpoint's pauses
        self.pauses = 0  # pauses of the whole endpoint (the server said it was overloaded as a whole)

    @property
    def current(self) -> int:
        return max(self.floor, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns the request's ticket (for `overloaded` and `release`)."""
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
                self._level[self._issued - 1] = self.in_flight
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

    def release(self, ticket: int, succeeded: bool) -> None:
        """The request with `ticket` is answered (after `overloaded`, if it was an overload)."""
        self.in_flight -= 1
        level = self._level.pop(ticket, None)
        if level is not None:  # not an overload: the server took it, whatever it answered
            self._remember(level, False)
        if succeeded:
            self._last_success = time.monotonic()
            if self.limit < self.ceiling:
                step = 1.0 if self.limit < self.threshold else 1.0 / self.limit
                if self.limit + 1 >= self._overloaded_at:
                    step /= PLATEAU_ROUNDS
                self.limit = min(float(self.ceiling), self.limit + step)
        self._wake()

    def overloaded(self, ticket: int, retry_after: float | None, server_wide: bool = False) -> None:
        """An overload signal (429, 503) for the request with `ticket`, which waits out its own `retry_after`:
        cut the limit if it is evidence of congestion, and pause the endpoint if the server is overloaded as a
        whole (`server_wide`: it said so; or nothing has succeeded for WHOLE_OVERLOAD_S)."""
        now = time.monotonic()
        self.overloads += 1
        if retry_after:
            self.paused_s += retry_after
        level = self._level.pop(ticket, self.in_flight)
        # Judged against the other answers (itself included, one overload among few answers would look like a lot).
        congested = ticket >= self._window_start and self.rises_with_concurrency(level)
        self._remember(level, True)
        if ticket >= self._window_start:  # else sent before the last cut: the same congestion, already answered
            if congested:
                self._window_start = self._issued
                self._overloaded_at = self.limit
                self.limit = self.threshold = max(
                    float(self.floor), self.limit * DECREASE, min(float(self.proven()), self.limit - 1)
                )
                self.low = min(self.low, self.current)
                self.decreases += 1
            else:
                self.tolerated += 1
        if retry_after and (server_wide or now - self._last_success >= WHOLE_OVERLOAD_S):
            if self.paused_until < now:
                self.pauses += 1
            self.paused_until = max(self.paused_until, now + retry_after)

    def rises_with_concurrency(self, level: int) -> bool:
        """Whether `level` is above the proven one, or the server turned away more than CONGESTED_SHARE of the
        recent requests sent with `level` or more in flight, MIN_EVIDENCE of them answered at least (past a
        server's capacity they come in within moments, the overloads first)."""
        proven = self.proven()
        if proven and level > proven:
            return True  # more in flight than the server was seen to take
        taken, turned_away = sum(self._taken[level:]), sum(self._turned_away[level:])
        return taken + turned_away >= MIN_EVIDENCE and turned_away > CONGESTED_SHARE * (taken + turned_away)

    def proven(self) -> int:
        """The highest level (requests in flight) at which the server took all but CONGESTED_SHARE of the recent
        requests, with MIN_EVIDENCE answers to show for it."""
        for level in range(self.ceiling, 0, -1):
            answers = self._taken[level] + self._turned_away[level]
            if answers >= MIN_EVIDENCE and self._turned_away[level] <= CONGESTED_SHARE * answers:
                return level
        return 0

    def _remember(self, level: int, turned_away: bool) -> None:
        level = min(level, self.ceiling)
        self._answers.append((level, turned_away))
        (self._turned_away if turned_away else self._taken)[level] += 1
        if len(self._answers) > HISTORY:
            old_level, old_turned_away = self._answers.popleft()
            (self._turned_away if old_turned_away else self._taken)[old_level] -= 1

    def _wake(self) -> None:
        # Hand turns to waiters while there are free slots; each re-checks the limit and the pause itself.
        free = self.current - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def summary(self) -> dict:
        return {
            "ceiling": self.ceiling,
            "low": self.low,
            "final": self.current,
            "decreases": self.decreases,
            "overloads": self.overloads,
            "tolerated": self.tolerated,
            "proven": self.proven(),
            "pauses": self.pauses,
            "paused_s": round(self.paused_s, 3),
        }
