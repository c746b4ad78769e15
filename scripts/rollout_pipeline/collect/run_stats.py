"""A collection run's counters: what its stats file reports. Mergeable, so several processes can share a run."""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class LatencyHistogram:
    """Request latencies in log-spaced buckets (0.5% wide, 10 us to 1 h): fixed memory (32 KB) whatever the
    number of requests, and percentiles within 0.25% of the exact ones. Keeping every latency instead cost
    4 bytes a request plus a sorted copy of them all at the end (32 bytes a request: 32 MB at a million)."""

    MIN_S = 1e-5
    GROWTH = 1.005
    BUCKETS = 3960  # MIN_S * GROWTH ** BUCKETS > 3600 s

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self.BUCKETS))
        self._scale = 1 / math.log(self.GROWTH)
        self._shift = -math.log(self.MIN_S) * self._scale

    def append(self, seconds: float) -> None:
        index = int(math.log(seconds) * self._scale + self._shift) if seconds > self.MIN_S else 0
        self.counts[index if index < self.BUCKETS else self.BUCKETS - 1] += 1

    def __len__(self) -> int:
        return sum(self.counts)

    def to_bytes(self) -> bytes:
        return self.counts.tobytes()

    def add_bytes(self, data: bytes) -> None:
        """Add another histogram's counts (from `to_bytes`, e.g. sent by another collector process)."""
        other = array("q")
        other.frombytes(data)
        if len(other) != self.BUCKETS:
            raise ValueError(f"latency histogram has {len(other)} buckets, expected {self.BUCKETS}")
        for index, count in enumerate(other):
            if count:
                self.counts[index] += count

    def percentiles(self, quantiles: tuple[float, ...]) -> dict[str, float | None]:
        """{"p50": seconds, ...}: the rank int(q * n) of the sorted latencies, as its bucket's geometric middle."""
        names = [f"p{round(q * 100):d}" for q in quantiles]
        total = len(self)
        if not total:
            return dict.fromkeys(names)
        ranks = [min(total - 1, int(q * total)) for q in quantiles]
        found: dict[str, float | None] = {}
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            while len(found) < len(ranks) and ranks[len(found)] < seen:
                middle = self.MIN_S * self.GROWTH ** (index + 0.5) if index else self.MIN_S
                found[names[len(found)]] = round(middle, 6)
            if len(found) == len(ranks):
                break
        return found


@dataclass
class RunStats:
    """Counters for the run's stats file. Latencies live in a fixed-size histogram."""

    started: float = field(default_factory=time.perf_counter)
    # The collecting itself, from the first request on (start-up, the input scan and the final write excluded):
    # what throughput is measured over, like a load generator's.
    collect_started: float | None = None
    collect_ended: float | None = None
    new_rollouts: int = 0
    failures: int = 0
    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    failure_causes: dict[str, int] = field(default_factory=dict)
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)
    input_tokens: int = 0
    output_tokens: int = 0
    reward_sum: float = 0.0
    failure_streak: int = 0
    last_error: str = ""
    process_peak_rss_mb: dict[int, float] = field(default_factory=dict)  # child process index -> its peak
    backoff_wait_s: float = 0.0  # summed over rollouts: time their retries slept in backoff

    @property
    def collect_s(self) -> float:
        if self.collect_started is None or self.collect_ended is None:
            return 0.0
        return self.collect_ended - self.collect_started

    def throughput(self) -> float:
        """New rollouts per second while collecting."""
        return self.new_rollouts / self.collect_s if self.collect_s > 0 else 0.0

    def percentiles(self) -> dict[str, float | None]:
        return self.latencies.percentiles((0.50, 0.95, 0.99))

    def count_retry(self, cause: str) -> None:
        self.retries[cause] = self.retries.get(cause, 0) + 1
