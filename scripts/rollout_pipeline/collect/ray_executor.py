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

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout_pipeline.collect.events import EventReader
from rollout_pipeline.collect.executor import Executor, Job, Outcome
from rollout_pipeline.collect.ray_cluster import RayCluster
from rollout_pipeline.collect.ray_worker import RolloutWorker, WorkerCrashed, WorkerSecrets, public_settings, worker_env
from rollout_pipeline.collect.work import WorkItem, work_items
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
_POLL_S = 0.2


class RayExecutor(Executor):
    """Fetches on Ray workers (`workers`: default one per CPU of the cluster, at most the run's slots), on the
    cluster at `address` (None: a local instance this run starts)."""

    def __init__(self, address: str | None, workers: int | None) -> None:
        self.address = address
        self.workers = workers
        self.cluster: RayCluster | None = None
        self._stopped = False

    def connect(self) -> None:
        self.cluster = RayCluster(self.address)  # an unreachable one is said before the run writes any file

    def stop(self) -> None:
        self._stopped = True  # the driver's loop sees it within a poll, and hands out no more chunks

    def collect(self, job: Job) -> Outcome:
        assert self.cluster is not None, "connect() first"
        try:
            job.started()
            return self._collect(self.cluster, job)
        except UserError as exc:  # every worker died, say: what finished is kept, as for any fatal error
            job.sink.fatal(exc)
            return Outcome(workers=0, endpoints={})
        finally:
            self.cluster.shutdown()

    def _collect(self, cluster: RayCluster, job: Job) -> Outcome:
        ray, parallel = cluster.ray, job.parallel
        cpus = cluster.cpus()
        count = max(1, min(self.workers or cpus, parallel))
        shares = [parallel // count + (1 if index < parallel % count else 0) for index in range(count)]
        chunk_size = max(1, min(CHUNK_REQUESTS, shares[-1], job.pending_requests // (count * CHUNKS_PER_WORKER)))
        worker_class = ray.remote(RolloutWorker)
        options = {
            "num_cpus": min(1.0, cpus / count),
            "scheduling_strategy": "SPREAD",
            "max_concurrency": IN_FLIGHT + 2,
            "runtime_env": {"env_vars": worker_env()},
        }
        arguments = public_settings(job.settings)
        secrets = ray.put(WorkerSecrets(job.urls, job.settings.agent, job.headers))
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
            job.stats.collect_started = time.perf_counter()  # throughput counts from the first request
            endpoints: dict = {}
            reader = EventReader(job.sink, job.stats, endpoints, count, "Ray worker")
            dispatcher = _Dispatcher(
                ray, actors, chunk_size, work_items(job.settings, job.is_done), reader, lambda: self._stopped
            )
            dispatcher.run()
            alive = [index for index in range(count) if index not in dispatcher.died]
            if not self._stopped:
                summaries = ray.get([actors[index].finish.remote() for index in alive], timeout=SUMMARY_TIMEOUT_S)
                for index, events in zip(alive, summaries):
                    for kind, payload in events:
                        reader.take(index, kind, payload)
            return Outcome(
                workers=count,
                endpoints=endpoints,
                delivered=reader.delivered,
                stats=_ray_stats(count, reader.delivered, nodes, dispatcher.died),
            )
        finally:
            for actor in actors:
                ray.kill(actor)


def _ray_stats(workers: int, delivered: list[int], nodes: list[str], died: list[int]) -> dict:
    """What the run's stats report about the workers: how many, on how many nodes, each node's rollouts."""
    by_node: dict[str, int] = {}
    for node, count in zip(nodes, delivered):
        by_node[node] = by_node.get(node, 0) + count
    return {
        "executor": "ray",
        "ray": {
            "workers": workers,
            "nodes": len(by_node),
            "rollouts_by_node": by_node,
            **({"workers_died": died} if died else {}),
        },
    }


@dataclass
class _Dispatcher:
    """The driver's loop: keep every live worker IN_FLIGHT chunks ahead, take in answered chunks as they come,
    and give a dead worker's unanswered chunks to the others."""

    ray: Any
    actors: list
    chunk_size: int
    work: Iterator[WorkItem]
    reader: EventReader
    should_stop: Callable[[], bool]
    requeued: deque[WorkItem] = field(default_factory=deque)
    in_flight: dict[Any, tuple[int, list[WorkItem]]] = field(default_factory=dict)  # ref -> (worker, its chunk)
    died: list[int] = field(default_factory=list)

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
            while index not in self.died and self.chunks[index] < IN_FLIGHT:
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
            if index not in self.died:
                self.died.append(index)
                reason = " ".join(str(exc).split())[:160]
                self.reader.sink.note(
                    f"Ray worker {index} died ({reason}); its unfinished rollouts go to the other workers"
                )
            if len(self.died) == len(self.actors):
                raise UserError(
                    "every Ray worker died; the finished rollouts are kept: run the same command again "
                    "to collect the rest"
                ) from None
            return
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, WorkerCrashed) else exc
            raise WorkerCrashed(f"Ray worker {index} raised:\n{cause}") from None
        for kind, payload in events:
            self.reader.take(index, kind, payload)
