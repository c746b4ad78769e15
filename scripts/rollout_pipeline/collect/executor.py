"""The one interface of the executors (one process, several processes, Ray): fetch a run's pending rollouts into its sink."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from rollout_pipeline.collect.events import Sink
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings


@dataclass
class Job:
    """What an executor is given: the run's settings, where its requests go and with which headers, which rollouts
    are done already, and where everything it produces goes in this process (the only writer)."""

    settings: CollectSettings
    urls: list[str]
    headers: dict[str, str]
    is_done: Callable[[int, int], bool]
    sink: Sink
    stats: RunStats
    parallel: int  # request slots, shared by the executor's workers
    pending_requests: int
    pending_tasks: int
    # Called once the executor's workers exist: the place to start threads (a progress bar's), which a fork must
    # not copy.
    started: Callable[[], None]


@dataclass
class Outcome:
    """What the run's stats report about the executor's workers once it is done."""

    workers: int
    endpoints: dict  # per endpoint: requests, failures, the adaptive limit's trace
    delivered: list[int] = field(default_factory=list)  # rollouts each worker delivered (none for one process)
    stats: dict = field(default_factory=dict)  # what else it adds to the stats file
    ended: list[str] = field(default_factory=list)  # each worker that did not end cleanly: how, in words


class Executor(ABC):
    """Fetches every pending rollout of a run, here or elsewhere; everything it produces reaches `job.sink` here."""

    def connect(self) -> None:  # noqa: B027 (a hook: most executors have nothing to reach)
        """Reach what it runs on (a cluster), before the run writes any file; nothing to reach by default."""

    @abstractmethod
    def collect(self, job: Job) -> Outcome:
        """Fetch every pending rollout; return once all of them are in, or once stopped."""

    @abstractmethod
    def stop(self) -> None:
        """Stop early (a fatal error): no new requests; what already finished still reaches the sink."""

    def request_limit(self) -> int | None:
        """The adaptive request limit while it is below its ceiling (a rate-limited server), when this process
        sees it: the progress bar shows it."""
        return None
