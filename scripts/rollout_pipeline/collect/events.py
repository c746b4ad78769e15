"""What a fetcher reports (rollouts, failures, retries, notes, a fatal error, its summary): the Sink it reports to, and
the one encoding in which the executors that fetch elsewhere (other processes, Ray workers) send it here."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from rollout_pipeline.collect.run_stats import RunStats, peak_rss_mb
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import dumps

# An encoded event: its kind (one byte) and a payload of bytes.
ROLLOUT, FAILURE, RETRY, FATAL, NOTE, LATENCIES, SUMMARY = b"R", b"F", b"T", b"X", b"N", b"H", b"S"
# A rollout's payload: task_index, rollout_index, reward, input_tokens, output_tokens; then the record line.
ROLLOUT_HEAD = struct.Struct("<qqdqq")


@dataclass(frozen=True)
class RolloutFailure:
    """A rollout with no record: why (its cause and message), whether it was skipped (an outcome, never retried), and
    the server's reply, its Responses object and the generation, when there were some."""

    task_index: int
    rollout_index: int
    prompt_id: str
    cause: str
    message: str
    skipped: bool = False
    reply: Any = None
    response: Any = None
    generation: dict | None = None


class Sink(Protocol):
    """Where finished rollouts, failures and retries go."""

    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None: ...

    def failure(self, failure: RolloutFailure) -> None: ...

    def note(self, message: str) -> None: ...

    def retry(self, cause: str, retry_after: float | None) -> None: ...

    def fatal(self, error: UserError) -> None: ...


class EventWriter:
    """A sink elsewhere: each event is encoded and handed to `send(kind, payload)`; `on_fatal` runs after a fatal
    error is sent (a collector process stops its fetcher then)."""

    def __init__(self, send: Callable[[bytes, bytes], None], on_fatal: Callable[[], None] = lambda: None) -> None:
        self.send = send
        self.on_fatal = on_fatal

    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None:
        self.send(ROLLOUT, ROLLOUT_HEAD.pack(task_index, rollout_index, reward, input_tokens, output_tokens) + line)

    def failure(self, failure: RolloutFailure) -> None:
        self.send(FAILURE, dumps(failure))

    def note(self, message: str) -> None:
        self.send(NOTE, message.encode())

    def retry(self, cause: str, retry_after: float | None) -> None:
        self.send(RETRY, dumps({"cause": cause, "retry_after": retry_after}))

    def fatal(self, error: UserError) -> None:
        self.send(FATAL, str(error).encode())
        self.on_fatal()

    def summary(self, stats: RunStats, endpoints: dict) -> None:
        """What the fetcher adds to the run's stats when it is done: its latencies, requests, per-endpoint counts."""
        self.send(LATENCIES, stats.latencies.to_bytes())
        summary = {
            "requests": stats.requests,
            "endpoints": endpoints,
            "peak_rss_mb": peak_rss_mb(),
            "backoff_wait_s": stats.backoff_wait_s,
        }
        self.send(SUMMARY, dumps(summary))


class EventReader:
    """Takes in the encoded events of `workers` fetchers here: into the run's sink, stats and per-endpoint counts
    (url -> {requests, failures, ...}); a note said by several of them reaches the sink once."""

    def __init__(self, sink: Sink, stats: RunStats, endpoints: dict, workers: int, worker_name: str) -> None:
        self.sink = sink
        self.stats = stats
        self.endpoints = endpoints
        self.delivered = [0] * workers  # rollouts each worker delivered
        self.worker_name = worker_name
        self._notes: set[bytes] = set()

    def take(self, worker: int, kind: bytes, payload: bytes) -> None:
        if kind == ROLLOUT:
            self.delivered[worker] += 1
            task_index, rollout_index, reward, input_tokens, output_tokens = ROLLOUT_HEAD.unpack_from(payload)
            line = memoryview(payload)[ROLLOUT_HEAD.size :]
            self.sink.rollout(task_index, rollout_index, line, reward, input_tokens, output_tokens)
        elif kind == FAILURE:
            self.sink.failure(RolloutFailure(**orjson.loads(payload)))
        elif kind == RETRY:
            self.sink.retry(**orjson.loads(payload))
        elif kind == NOTE:
            if payload not in self._notes:  # each worker says it once; the run says it once
                self._notes.add(payload)
                self.sink.note(payload.decode())
        elif kind == FATAL:
            self.sink.fatal(UserError(payload.decode()))
        elif kind == LATENCIES:
            self.stats.latencies.add_bytes(payload)
        elif kind == SUMMARY:
            self._merge_summary(worker, orjson.loads(payload))
        else:
            raise ValueError(f"{self.worker_name} {worker} sent an unknown frame kind {kind!r}")

    def _merge_summary(self, worker: int, summary: dict) -> None:
        self.stats.requests += summary["requests"]
        self.stats.backoff_wait_s += summary["backoff_wait_s"]
        self.stats.process_peak_rss_mb[worker] = summary["peak_rss_mb"]
        for url, counts in summary["endpoints"].items():
            merged = self.endpoints.setdefault(url, {})
            for key, value in counts.items():  # each worker has its share of the slots: they add up
                merged[key] = round(merged.get(key, 0) + value, 3)
