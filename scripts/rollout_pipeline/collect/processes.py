"""A collection run spread over several processes: what the children send, and how the parent takes it in.

Each child runs a Fetcher on its share of the parallelism and claims tasks in small ranges from a shared
counter as it needs them, so a child that gets slow replies simply claims less. The parent is the only writer:
a rollout counts as done once the parent has appended it to the progress file, exactly as in a single-process
run, so resume and kill-safety do not change. A child killed mid-request loses only requests not yet answered.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import orjson

from rollout_pipeline.collect.fanout import Child, ForkFailed, FrameWriter, fan_out
from rollout_pipeline.collect.fetcher import Fetcher, Sink, work_items
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import dumps

# One finished rollout: task_index, rollout_index, reward, input_tokens, output_tokens; then the record line.
ROLLOUT = struct.Struct("<qqdqq")
_ROLLOUT, _FAILURE, _RETRY, _FATAL, _LATENCIES, _SUMMARY, _NOTE = b"R", b"F", b"T", b"X", b"H", b"S", b"N"
# A child claims at most this many requests' worth of tasks at a time (few claims), and small runs are cut
# into at least CLAIMS_PER_PROCESS claims per process, so the last claims end close together.
CLAIM_REQUESTS = 64
CLAIMS_PER_PROCESS = 8
# Below this many slots a process is not worth forking: one process keeps up with them at any latency an
# LLM server has (it drives about 4,000 requests/s; see bench/RESULTS.md).
SLOTS_PER_PROCESS = 128
MIN_REQUESTS_PER_PROCESS = 2_000
MAX_PROCESSES = 8


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def auto_processes(parallel: int, pending_requests: int) -> int:
    """How many processes `processes: auto` uses: one per SLOTS_PER_PROCESS slots, at most one per CPU this
    process may run on, and one only when there is too little work to be worth a fork."""
    if not sys.platform.startswith("linux"):
        return 1  # fork is only safe to assume on Linux (macOS libraries may not survive it); --processes N forces it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_PROCESSES, parallel // SLOTS_PER_PROCESS, pending_requests // MIN_REQUESTS_PER_PROCESS))


def fetcher_summary(stats: RunStats, endpoints: dict) -> dict:
    """What one collector process (or Ray worker) reports when its fetcher is done; `merge_summary` takes it in."""
    return {
        "requests": stats.requests,
        "endpoints": endpoints,
        "peak_rss_mb": peak_rss_mb(),
        "backoff_wait_s": stats.backoff_wait_s,
    }


def merge_summary(summary: dict, index: int, stats: RunStats, endpoints: dict) -> None:
    """Add one process's (or worker's) `fetcher_summary` to the run's stats and per-endpoint counts."""
    stats.requests += summary["requests"]
    stats.backoff_wait_s += summary["backoff_wait_s"]
    stats.process_peak_rss_mb[index] = summary["peak_rss_mb"]
    for url, counts in summary["endpoints"].items():
        merged = endpoints.setdefault(url, {})
        for key, value in counts.items():  # each process has its share of the slots: they add up
            merged[key] = round(merged.get(key, 0) + value, 3)


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


class PipeSink:
    """A child's sink: every finished rollout, failure and retry goes to the parent as a frame."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer
        self.fetcher: Fetcher | None = None

    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None:
        self.writer.send(_ROLLOUT, ROLLOUT.pack(task_index, rollout_index, reward, input_tokens, output_tokens) + line)

    def failure(
        self,
        task_index: int,
        rollout_index: int,
        prompt_id: str,
        cause: str,
        message: str,
        skipped: bool = False,
        reply: Any = None,
        response: Any = None,
        generation: dict | None = None,
    ) -> None:
        self.writer.send(
            _FAILURE,
            dumps(
                {
                    "task_index": task_index,
                    "rollout_index": rollout_index,
                    "prompt_id": prompt_id,
                    "cause": cause,
                    "message": message,
                    "skipped": skipped,
                    "reply": reply,
                    "response": response,
                    "generation": generation,
                }
            ),
        )

    def note(self, message: str) -> None:
        self.writer.send(_NOTE, message.encode())

    def retry(self, cause: str, retry_after: float | None) -> None:
        self.writer.send(_RETRY, dumps({"cause": cause, "retry_after": retry_after}))

    def fatal(self, error: UserError) -> None:
        self.writer.send(_FATAL, str(error).encode())
        if self.fetcher is not None:
            self.fetcher.stop()

    def summary(self, stats: RunStats, endpoints: dict) -> None:
        self.writer.send(_LATENCIES, stats.latencies.to_bytes())
        self.writer.send(_SUMMARY, dumps(fetcher_summary(stats, endpoints)))


def collect_in_processes(
    settings: CollectSettings,
    count: int,
    parallel: int,
    urls: list[str],
    headers: dict[str, str],
    is_done: Callable[[int, int], bool],
    sink: Sink,
    stats: RunStats,
    endpoints: dict,
    should_stop: Callable[[], bool],
    run_async: Callable[..., None],
    interrupts: tuple[type[BaseException], ...],
    pending_tasks: int,
    forked: Callable[[], None],
) -> tuple[list[int], list[str]]:
    """Collect with `count` child processes sharing `parallel` slots; everything they send goes to `sink`,
    `stats` and `endpoints` (url -> {requests, failures}) in this process. Returns the rollouts each child
    delivered, and for each child that did not exit cleanly, how it ended (the caller decides what that means
    for the run)."""
    next_range = SharedCounter()
    requests_per_task = 1 if settings.agent["repeat_mode"] == "n" else settings.num_repeats
    tasks_per_claim = max(1, min(CLAIM_REQUESTS // requests_per_task, pending_tasks // (count * CLAIMS_PER_PROCESS)))
    delivered = [0] * count
    notes: set[bytes] = set()

    def claim() -> range:
        start = next_range.fetch_add(tasks_per_claim)
        return range(start, start + tasks_per_claim)

    def child_main(index: int, writer: FrameWriter, stop_fd: int) -> int:
        child_stats = RunStats()
        child_sink = PipeSink(writer)
        share = parallel // count + (1 if index < parallel % count else 0)
        fetcher = Fetcher(
            settings, urls, headers, child_sink, child_stats, work_items(settings, is_done, claim), max(1, share)
        )
        child_sink.fetcher = fetcher

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
            writer.send(_FATAL, str(exc).encode())
            return 1
        writer.attach(None)  # the loop is closed: what is sent from here on is written by the final flush
        child_stats.backoff_wait_s = fetcher.retry_policy.waited_s
        child_sink.summary(child_stats, fetcher.pool.summary())
        return 0

    def on_frame(index: int, kind: bytes, payload: bytes) -> None:
        if kind == _ROLLOUT:
            delivered[index] += 1
            task_index, rollout_index, reward, input_tokens, output_tokens = ROLLOUT.unpack_from(payload)
            sink.rollout(
                task_index, rollout_index, memoryview(payload)[ROLLOUT.size :], reward, input_tokens, output_tokens
            )
        elif kind == _FAILURE:
            sink.failure(**orjson.loads(payload))
        elif kind == _RETRY:
            sink.retry(**orjson.loads(payload))
        elif kind == _NOTE:
            if payload not in notes:  # each child says it once; the run says it once
                notes.add(payload)
                sink.note(payload.decode())
        elif kind == _FATAL:
            sink.fatal(UserError(payload.decode()))
        elif kind == _LATENCIES:
            stats.latencies.add_bytes(payload)
        elif kind == _SUMMARY:
            merge_summary(orjson.loads(payload), index, stats, endpoints)
        else:
            raise ValueError(f"collector process {index} sent an unknown frame kind {kind!r}")

    try:
        children: list[Child] = fan_out(count, child_main, on_frame, should_stop, interrupts, forked)
    except ForkFailed as exc:
        raise UserError(f"{exc}; run with --processes 1, or free some processes or open files") from None
    finally:
        next_range.close()
    endings = ((child, child.describe_exit()) for child in children)
    return delivered, [f"collector process {c.index} (pid {c.pid}) {how}" for c, how in endings if how]
