"""The one-process executor: one Fetcher on this process's event loop, over the stream of pending requests."""

from __future__ import annotations

from rollout_pipeline.collect.executor import Executor, Job, Outcome
from rollout_pipeline.collect.fetcher import Fetcher
from rollout_pipeline.collect.run_loop import run_async
from rollout_pipeline.collect.work import Stream, work_items


class OneProcess(Executor):
    """Fetches in this process: the sink is called directly, with no encoding in between."""

    def __init__(self) -> None:
        self.fetcher: Fetcher | None = None

    def collect(self, job: Job) -> Outcome:
        job.started()
        work = Stream(work_items(job.settings, job.is_done))
        self.fetcher = Fetcher(job.settings, job.urls, job.headers, job.sink, job.stats, work, job.parallel)
        run_async(self.fetcher.run())
        job.stats.backoff_wait_s = self.fetcher.retry_policy.waited_s
        return Outcome(workers=1, endpoints=self.fetcher.pool.summary())

    def stop(self) -> None:
        if self.fetcher is not None:
            self.fetcher.stop()

    def request_limit(self) -> int | None:
        pool = self.fetcher.pool if self.fetcher is not None else None
        limit = pool.current_limit() if pool is not None else None
        return limit if limit is not None and limit < pool.ceiling * len(pool.endpoints) else None
