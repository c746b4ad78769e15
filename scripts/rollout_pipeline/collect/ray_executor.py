"""The Ray executor: the collector's fetch-and-score loop in Ray actors across a cluster; this process stays the only writer.

Opt in with `--executor ray` (or COLLECT_EXECUTOR=ray). Each worker is an async actor running a Fetcher, so
requests, retries, the adaptive limits and the verifiers all run on the workers, exactly as in a collector
process. This process (the driver) reads the input, hands each worker bounded chunks of requests (at most
IN_FLIGHT chunks per worker: never the whole prompt list), and takes in each chunk's finished rollouts, failures,
retries and notes through the same sink as the local executors (progress file, resume, stats, output). A chunk's
results count only once the driver has them, so a worker that dies loses nothing that was counted: its
unanswered chunks go to the other workers, and no rollout is delivered twice.

Secrets (the API key in the headers, credentials in URLs, the verifier's URL) reach the workers as a Ray object
(`ray.put`), held in the object store only while the workers start: never in a `runtime_env`'s env_vars, which Ray
writes to runtime_env_agent.log, nor inline in the arguments of a task or an actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
import signal
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout_pipeline.collect.fetcher import Fetcher, Sink, WorkItem, work_items
from rollout_pipeline.collect.processes import fetcher_summary, merge_summary
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.errors import UserError

# Workers are named `rollout-worker-<driver pid>-<index>` in this namespace, so that an operator (or a test) can
# find one with ray.get_actor(name, namespace=NAMESPACE).
NAMESPACE = "rollout-pipeline"
# Chunks handed to a worker and not yet answered: enough that its slots never wait for the driver.
IN_FLIGHT = 3
# A chunk holds at most this many requests, and small runs are cut into at least CHUNKS_PER_WORKER chunks per
# worker, so the last chunks end close together.
CHUNK_REQUESTS = 256
CHUNKS_PER_WORKER = 8
# How long the workers may take to start (a busy cluster queues them) and to report at the end.
START_TIMEOUT_S = 120.0
SUMMARY_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
DEFAULT_GCS_PORT = 6379
_POLL_S = 0.2


class WorkerCrashed(Exception):
    """A worker raised (a bug, not a fault of the agent): its traceback is the message."""


@dataclass(frozen=True, repr=False)
class WorkerSecrets:
    """What a worker needs that may hold credentials: the agent's URLs, its verifier and the request headers (the
    API key among them). Its repr shows none of it, should Ray ever print an argument."""

    urls: list[str]
    verifier: Any
    headers: dict[str, str]

    def __repr__(self) -> str:
        return "WorkerSecrets(***)"


def worker_env() -> dict[str, str]:
    """The workers' environment variables: the driver's PYTHONPATH, so that a `module:function` verifier imports
    there as it does here (on other hosts, the module must be at the same path or installed). No secret: Ray logs
    these."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def public_settings(settings: CollectSettings) -> CollectSettings:
    """The run's settings as the workers' arguments: URLs and the verifier (either may hold credentials) left out."""
    agent = {**settings.agent, "url": "(in the worker's environment)", "verifier": "(in the worker's environment)"}
    return dataclasses.replace(settings, agent=agent)


# -- the worker side -------------------------------------------------------------------------------
_chunk: contextvars.ContextVar[_Chunk] = contextvars.ContextVar("chunk")


class _Chunk:
    """One call's worth of requests: the events they produce, and a future set when the last one is done."""

    def __init__(self, size: int) -> None:
        self.events: list[tuple] = []
        self.remaining = size
        self.error: str | None = None
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        if size == 0:
            self.done.set_result(None)

    def item_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)


class _ChunkSink:
    """A worker's sink: each event goes into the list of the chunk whose request produced it."""

    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None:
        _chunk.get().events.append(("R", task_index, rollout_index, bytes(line), reward, input_tokens, output_tokens))

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
        _chunk.get().events.append(
            (
                "F",
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
                },
            )
        )

    def note(self, message: str) -> None:
        _chunk.get().events.append(("N", message))

    def retry(self, cause: str, retry_after: float | None) -> None:
        _chunk.get().events.append(("T", cause, retry_after))

    def fatal(self, error: UserError) -> None:
        _chunk.get().events.append(("X", str(error)))


class _ChunkFetcher(Fetcher):
    """A Fetcher fed by a queue of chunks rather than one stream: its `parallel` slots take requests from
    whichever chunk came first, so the next chunk keeps them busy while the last requests of one finish."""

    def __init__(
        self,
        settings: CollectSettings,
        urls: list[str],
        headers: dict[str, str],
        sink: Sink,
        stats: RunStats,
        parallel: int,
    ) -> None:
        super().__init__(settings, urls, headers, sink, stats, iter(()), parallel)
        self.queue: asyncio.Queue = asyncio.Queue()

    async def _schedule(self) -> None:
        self._finished = asyncio.get_running_loop().create_future()
        if self._stopped:
            return
        slots = [asyncio.create_task(self._slot()) for _ in range(self.parallel)]
        try:
            await self._finished
        finally:
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)

    async def _slot(self) -> None:
        while True:
            chunk, item = await self.queue.get()
            _chunk.set(chunk)
            try:
                await self._rollouts(item)
            except asyncio.CancelledError:
                raise
            except BaseException:  # a bug: the driver reports it rather than wait for the chunk forever
                chunk.error = chunk.error or traceback.format_exc()
            finally:
                chunk.item_done()


class RolloutWorker:
    """One Ray actor (async): a fetcher over the chunks the driver hands it. Built by `ray.remote` in the driver."""

    def __init__(self, settings: CollectSettings, parallel: int, secrets: WorkerSecrets) -> None:
        agent = {**settings.agent, "url": secrets.urls, "verifier": secrets.verifier}
        self.settings = dataclasses.replace(settings, agent=agent)
        self.stats = RunStats()
        self.fetcher = _ChunkFetcher(self.settings, secrets.urls, secrets.headers, _ChunkSink(), self.stats, parallel)
        self.running: asyncio.Task | None = None

    def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    async def collect(self, items: list[WorkItem]) -> list[tuple]:
        """Fetch and score one chunk; return its events in the order they happened."""
        if self.running is None:
            self.running = asyncio.ensure_future(self.fetcher.run())
        # A prompt's pending count is of its requests in this chunk (the pool forgets the prompt after the last).
        for item in items:
            item.pending.requests = 0
        for item in items:
            item.pending.requests += 1
        chunk = _Chunk(len(items))
        for item in items:
            self.fetcher.queue.put_nowait((chunk, item))
        await asyncio.wait({chunk.done, self.running}, return_when=asyncio.FIRST_COMPLETED)
        if not chunk.done.done():  # the fetcher itself ended: a verifier that does not import here, say
            try:
                self.running.result()
            except UserError as exc:
                return [("X", f"on a Ray worker: {exc}")]
            raise RuntimeError("the worker's fetcher stopped before the chunk was done")
        if chunk.error is not None:
            raise WorkerCrashed(chunk.error)
        return chunk.events

    async def finish(self) -> dict:
        """Stop the fetcher; return what the stats file needs from this worker."""
        if self.running is not None:
            self.fetcher.stop()
            await self.running
        self.stats.backoff_wait_s = self.fetcher.retry_policy.waited_s
        return {
            **fetcher_summary(self.stats, self.fetcher.pool.summary()),
            "latencies": self.stats.latencies.to_bytes(),
        }


# -- the driver side -------------------------------------------------------------------------------
class RayCluster:
    """A connection to a Ray cluster for one run: the one at `address` (host:port or `auto`, Ray's conventions),
    or with no address a local instance that this run starts and shuts down."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise UserError(
                "--executor ray needs Ray, an optional extra: pip install -c requirements.lock "
                "-e '.[ray]' (or make setup-ray)"
            ) from None
        self.ray = ray
        self.address = address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home from a collection run
        with _own_signal_handlers():
            self._connect(address)

    def _connect(self, address: str | None) -> None:
        ray = self.ray
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            return
        if address.startswith("ray://"):
            raise UserError(
                f"Ray address {address}: Ray Client (ray://) is not supported; give the cluster's GCS "
                f"address, host:{DEFAULT_GCS_PORT}, or run on a cluster node with RAY_ADDRESS=auto"
            )
        if address != "auto":
            _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"cannot connect to the Ray cluster at {address} ({reason})") from None

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def shutdown(self) -> None:
        """Disconnect (and stop the local instance, when this run started it); the workers end with the job."""
        self.ray.shutdown()


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """Keep the collector's SIGINT and SIGTERM handlers: ray.init installs its own (the SIGTERM one kills the process
    outright), which would skip the collector's clean stop and its line saying what was kept."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: nothing was ours to keep
                    signal.signal(signum, handler)


def _check_reachable(address: str) -> None:
    """One line naming the address when nothing answers there: Ray itself would retry for minutes."""
    host, _, port = address.rpartition(":") if ":" in address else (address, "", str(DEFAULT_GCS_PORT))
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise UserError(f"Ray address {address!r}: expected host:port or auto") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (socket.timeout, TimeoutError)):
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({reason}); start it with `ray start --head`, "
            "or fix RAY_ADDRESS / --ray-address"
        ) from None


@dataclass
class RayOutcome:
    """What the run's stats report about the workers."""

    workers: int
    delivered: list[int]
    nodes: list[str]
    died: list[int] = field(default_factory=list)

    def stats(self) -> dict:
        by_node: dict[str, int] = {}
        for node, count in zip(self.nodes, self.delivered):
            by_node[node] = by_node.get(node, 0) + count
        return {
            "executor": "ray",
            "ray": {
                "workers": self.workers,
                "nodes": len(by_node),
                "rollouts_by_node": by_node,
                **({"workers_died": self.died} if self.died else {}),
            },
        }


def collect_on_ray(
    cluster: RayCluster,
    settings: CollectSettings,
    workers: int | None,
    parallel: int,
    urls: list[str],
    headers: dict[str, str],
    is_done: Callable[[int, int], bool],
    sink: Sink,
    stats: RunStats,
    endpoints: dict,
    should_stop: Callable[[], bool],
    pending_requests: int,
) -> RayOutcome:
    """Collect every pending rollout with Ray workers sharing `parallel` slots (`workers`: default one per CPU of the
    cluster, at most `parallel`); everything they produce goes to `sink`, `stats` and `endpoints` here."""
    ray = cluster.ray
    cpus = cluster.cpus()
    count = max(1, min(workers or cpus, parallel))
    shares = [parallel // count + (1 if index < parallel % count else 0) for index in range(count)]
    chunk_size = max(1, min(CHUNK_REQUESTS, shares[-1], pending_requests // (count * CHUNKS_PER_WORKER)))
    worker_class = ray.remote(RolloutWorker)
    options = {
        "num_cpus": min(1.0, cpus / count),
        "scheduling_strategy": "SPREAD",
        "max_concurrency": IN_FLIGHT + 2,
        "runtime_env": {"env_vars": worker_env()},
    }
    arguments = public_settings(settings)
    secrets = ray.put(WorkerSecrets(urls, settings.agent.get("verifier"), headers))
    actors = [
        worker_class.options(**options, name=f"rollout-worker-{os.getpid()}-{index}", namespace=NAMESPACE).remote(
            arguments, share, secrets
        )
        for index, share in enumerate(shares)
    ]
    try:
        try:
            nodes = ray.get([actor.node.remote() for actor in actors], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise UserError(
                f"the Ray cluster did not start {count} workers within {START_TIMEOUT_S:g} s (it offers "
                f"{cpus} CPUs); give fewer with --workers"
            ) from None
        del secrets  # every worker holds its copy: the object store drops it
        stats.collect_started = time.perf_counter()  # throughput counts from the first request, as with processes
        outcome = RayOutcome(count, [0] * count, nodes)
        _Dispatcher(ray, actors, chunk_size, work_items(settings, is_done), sink, outcome, should_stop).run()
        alive = [index for index in range(count) if index not in outcome.died]
        if not should_stop():
            summaries = ray.get([actors[index].finish.remote() for index in alive], timeout=SUMMARY_TIMEOUT_S)
            for index, summary in zip(alive, summaries):
                stats.latencies.add_bytes(summary.pop("latencies"))
                merge_summary(summary, index, stats, endpoints)
        return outcome
    finally:
        for actor in actors:
            ray.kill(actor)


@dataclass
class _Dispatcher:
    """The driver's loop: keep every live worker IN_FLIGHT chunks ahead, take in answered chunks as they come,
    and give a dead worker's unanswered chunks to the others."""

    ray: Any
    actors: list
    chunk_size: int
    work: Iterator[WorkItem]
    sink: Sink
    outcome: RayOutcome
    should_stop: Callable[[], bool]
    requeued: deque[WorkItem] = field(default_factory=deque)
    in_flight: dict[Any, tuple[int, list[WorkItem]]] = field(default_factory=dict)  # ref -> (worker, its chunk)
    notes: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.chunks = [0] * len(self.actors)  # per worker: chunks handed out and not yet answered

    def run(self) -> None:
        try:
            while not self.should_stop():
                self._hand_out()
                if not self.in_flight:
                    return
                ready, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=_POLL_S)
                for ref in ready:
                    self._take_in(ref)
        finally:
            self.work.close()  # type: ignore[attr-defined]

    def _next_chunk(self) -> list[WorkItem]:
        chunk: list[WorkItem] = []
        while len(chunk) < self.chunk_size and self.requeued:
            chunk.append(self.requeued.popleft())
        for item in self.work:
            chunk.append(item)
            if len(chunk) >= self.chunk_size:
                break
        return chunk

    def _hand_out(self) -> None:
        for index, actor in enumerate(self.actors):
            while index not in self.outcome.died and self.chunks[index] < IN_FLIGHT:
                chunk = self._next_chunk()
                if not chunk:
                    return
                self.in_flight[actor.collect.remote(chunk)] = (index, chunk)
                self.chunks[index] += 1

    def _take_in(self, ref: Any) -> None:
        index, chunk = self.in_flight.pop(ref)
        self.chunks[index] -= 1
        try:
            events = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            self.requeued.extend(chunk)  # nothing of an unanswered chunk was counted: all of it goes again
            if index not in self.outcome.died:
                self.outcome.died.append(index)
                reason = " ".join(str(exc).split())[:160]
                self.sink.note(f"Ray worker {index} died ({reason}); its unfinished rollouts go to the other workers")
            if len(self.outcome.died) == len(self.actors):
                raise UserError(
                    "every Ray worker died; the finished rollouts are kept: run the same command again "
                    "to collect the rest"
                ) from None
            return
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, WorkerCrashed) else exc
            raise WorkerCrashed(f"Ray worker {index} raised:\n{cause}") from None
        self.outcome.delivered[index] += sum(1 for event in events if event[0] == "R")
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: tuple) -> None:
        kind = event[0]
        if kind == "R":
            self.sink.rollout(*event[1:])
        elif kind == "F":
            self.sink.failure(**event[1])
        elif kind == "T":
            self.sink.retry(*event[1:])
        elif kind == "N":
            if event[1] not in self.notes:  # each worker says it once; the run says it once
                self.notes.add(event[1])
                self.sink.note(event[1])
        elif kind == "X":
            self.sink.fatal(UserError(event[1]))
