"""The several-process executor: forked children each run a Fetcher and send its events; the parent takes them in.

Each child runs a Fetcher on its share of the parallelism and claims tasks in small ranges from a shared
counter as it needs them, so a child that gets slow replies simply claims less. The parent is the only writer:
a rollout counts as done once the parent has appended it to the progress file, exactly as in a single-process
run, so resume and kill-safety do not change. A child killed mid-request loses only requests not yet answered.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import tempfile

from rollout_pipeline.collect.events import EventReader, EventWriter
from rollout_pipeline.collect.executor import Executor, Job, Outcome
from rollout_pipeline.collect.fanout import Child, ForkFailed, FrameWriter, fan_out
from rollout_pipeline.collect.fetcher import Fetcher
from rollout_pipeline.collect.run_loop import INTERRUPTS, run_async
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.work import Stream, work_items
from rollout_pipeline.errors import UserError

# A child claims at most this many requests' worth of tasks at a time (few claims), and small runs are cut
# into at least CLAIMS_PER_PROCESS claims per process, so the last claims end close together.
CLAIM_REQUESTS = 64
CLAIMS_PER_PROCESS = 8
# Below this many slots a process is not worth forking: one process keeps up with them at any latency an
# LLM server has (it drives about 4,000 requests/s; see bench/RESULTS.md).
SLOTS_PER_PROCESS = 128
MIN_REQUESTS_PER_PROCESS = 2_000
MAX_PROCESSES = 8


def auto_processes(parallel: int, pending_requests: int) -> int:
    """How many processes `processes: auto` uses: one per SLOTS_PER_PROCESS slots, at most one per CPU this
    process may run on, and one only when there is too little work to be worth a fork."""
    if not sys.platform.startswith("linux"):
        return 1  # fork is only safe to assume on Linux (macOS libraries may not survive it); --processes N forces it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_PROCESSES, parallel // SLOTS_PER_PROCESS, pending_requests // MIN_REQUESTS_PER_PROCESS))


class SharedCounter:
    """A counter that forked processes share: 8 bytes in an unlinked temporary file, changed under a POSIX
    record lock (fcntl.lockf). Unlike a semaphore, that lock goes when its holder dies, so a child killed in the
    middle of a claim cannot block the others for good (a dead claimer's range was never written: the next
    claim takes it)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self.fd = self._file.fileno()
        os.pwrite(self.fd, bytes(8), 0)

    def fetch_add(self, amount: int) -> int:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            value = int.from_bytes(os.pread(self.fd, 8, 0), "little")
            os.pwrite(self.fd, (value + amount).to_bytes(8, "little"), 0)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        return value

    def close(self) -> None:
        self._file.close()


class Processes(Executor):
    """Fetches in `count` forked child processes sharing the run's slots; each child's events come back as frames
    on its pipe, and this process takes them in (the only writer)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._stopped = False

    def stop(self) -> None:
        self._stopped = True  # the parent's loop sees it after the current batch of frames, and stops the children

    def collect(self, job: Job) -> Outcome:
        """Returns the rollouts each child delivered, and for each child that did not exit cleanly, how it ended
        (the caller decides what that means for the run)."""
        count, settings = self.count, job.settings
        next_range = SharedCounter()
        requests_per_task = 1 if settings.agent.repeat_mode == "n" else settings.num_repeats
        tasks_per_claim = max(
            1, min(CLAIM_REQUESTS // requests_per_task, job.pending_tasks // (count * CLAIMS_PER_PROCESS))
        )
        endpoints: dict = {}
        reader = EventReader(job.sink, job.stats, endpoints, count, "collector process")

        def claim() -> range:
            start = next_range.fetch_add(tasks_per_claim)
            return range(start, start + tasks_per_claim)

        def child_main(index: int, writer: FrameWriter, stop_fd: int) -> int:
            child_stats = RunStats()
            child_sink = EventWriter(writer.send, on_fatal=lambda: fetcher.stop())
            share = job.parallel // count + (1 if index < job.parallel % count else 0)
            work = Stream(work_items(settings, job.is_done, claim))
            fetcher = Fetcher(settings, job.urls, job.headers, child_sink, child_stats, work, max(1, share))

            async def main() -> None:
                loop = asyncio.get_running_loop()
                writer.attach(loop)

                def on_stop() -> None:
                    loop.remove_reader(stop_fd)
                    fetcher.stop()

                loop.add_reader(stop_fd, on_stop)
                await fetcher.run()

            try:
                run_async(main(), handle_sigterm=False)
            except UserError as exc:  # e.g. the input file changed under the run: one line, as in one process
                writer.attach(None)
                child_sink.fatal(exc)
                return 1
            writer.attach(None)  # the loop is closed: what is sent from here on is written by the final flush
            child_stats.backoff_wait_s = fetcher.retry_policy.waited_s
            child_sink.summary(child_stats, fetcher.pool.summary())
            return 0

        try:
            children: list[Child] = fan_out(
                count, child_main, reader.take, lambda: self._stopped, INTERRUPTS, job.started
            )  # `started` after the fork: tqdm starts a monitor thread, which a fork must not copy
        except ForkFailed as exc:
            raise UserError(f"{exc}; run with --processes 1, or free some processes or open files") from None
        finally:
            next_range.close()
        endings = ((child, child.describe_exit()) for child in children)
        ended = [f"collector process {c.index} (pid {c.pid}) {how}" for c, how in endings if how]
        return Outcome(workers=count, endpoints=endpoints, delivered=reader.delivered, ended=ended)
