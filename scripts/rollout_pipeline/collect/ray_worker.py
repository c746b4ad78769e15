"""A Ray worker: an async actor running one Fetcher over the chunks of requests the driver hands it, each chunk's
events encoded (collect/events.py) and returned with it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import traceback
from dataclasses import dataclass

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.events import FATAL, EventWriter, Sink
from rollout_pipeline.collect.fetcher import Fetcher
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.collect.work import WorkItem
from rollout_pipeline.errors import UserError


class WorkerCrashed(Exception):
    """A worker raised (a bug, not a fault of the agent): its traceback is the message."""


@dataclass(frozen=True, repr=False)
class WorkerSecrets:
    """What a worker needs that may hold credentials: the URLs to ask, the agent's settings as they are (its URL and
    verifier) and the request headers (the API key among them). Its repr shows none of it, should Ray ever print an
    argument."""

    urls: list[str]
    agent: AgentSettings
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
    hidden = "(in the worker's environment)"
    return dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, url=hidden, verifier=hidden))


class Chunk:
    """One call's worth of requests: the events they produce, encoded, and a future set when the last one is over."""

    def __init__(self, size: int) -> None:
        self.events: list[tuple[bytes, bytes]] = []
        self.sink = EventWriter(lambda kind, payload: self.events.append((kind, payload)))
        self.remaining = size
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        if size == 0:
            self.done.set_result(None)

    def item_done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)


class ChunkQueue:
    """A worker's WorkSource: the requests of every chunk handed to it, first come first served, so the next chunk
    keeps the slots busy while the last requests of one finish; a request's events go to its own chunk."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        self.chunk_of: dict[WorkItem, Chunk] = {}

    def put(self, items: list[WorkItem]) -> Chunk:
        chunk = Chunk(len(items))
        for item in items:
            self.chunk_of[item] = chunk
            self.queue.put_nowait(item)
        return chunk

    async def get(self) -> WorkItem | None:
        return await self.queue.get()  # never None: the driver stops the fetcher when the run is over

    def sink_for(self, item: WorkItem) -> Sink | None:
        return self.chunk_of[item].sink

    def done(self, item: WorkItem) -> None:
        self.chunk_of.pop(item).item_done()

    def close(self) -> None:
        pass


class RolloutWorker:
    """One Ray actor (async): a fetcher over the chunks the driver hands it. Built by `ray.remote` in the driver."""

    def __init__(self, settings: CollectSettings, parallel: int, secrets: WorkerSecrets) -> None:
        # The agent as the driver has it: its own url (`embedded` decides the logprobs kind its records state), not
        # the URLs asked, which for an embedded server are the one this run started.
        self.settings = dataclasses.replace(settings, agent=secrets.agent)
        self.stats = RunStats()
        self.work = ChunkQueue()
        # Events tied to no request (a /verify request's retries) go with the next chunk answered.
        self.unattached: list[tuple[bytes, bytes]] = []
        run_sink = EventWriter(lambda kind, payload: self.unattached.append((kind, payload)))
        self.fetcher = Fetcher(self.settings, secrets.urls, secrets.headers, run_sink, self.stats, self.work, parallel)
        self.running: asyncio.Task | None = None

    def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    async def collect(self, items: list[WorkItem]) -> list[tuple[bytes, bytes]]:
        """Fetch and score one chunk; return its events (collect/events.py) in the order they happened."""
        if self.running is None:
            self.running = asyncio.ensure_future(self.fetcher.run())
        # A prompt's pending count is of its requests in this chunk (the pool forgets the prompt after the last).
        for item in items:
            item.pending.requests = 0
        for item in items:
            item.pending.requests += 1
        chunk = self.work.put(items)
        await asyncio.wait({chunk.done, self.running}, return_when=asyncio.FIRST_COMPLETED)
        if self.running.done():  # the fetcher itself ended: a verifier that does not import here, or a bug
            try:
                self.running.result()
            except UserError as exc:
                if not chunk.done.done():
                    return [(FATAL, f"on a Ray worker: {exc}".encode())]
            except Exception:  # a bug: the driver reports it rather than wait for the chunk forever
                raise WorkerCrashed(traceback.format_exc()) from None
            if not chunk.done.done():
                raise RuntimeError("the worker's fetcher stopped before the chunk was done")
        events, self.unattached = self.unattached + chunk.events, []
        return events

    async def finish(self) -> list[tuple[bytes, bytes]]:
        """Stop the fetcher; return what the stats file needs from this worker, as summary events."""
        if self.running is not None:
            self.fetcher.stop()
            await self.running
        self.stats.backoff_wait_s = self.fetcher.retry_policy.waited_s
        summary: list[tuple[bytes, bytes]] = []
        EventWriter(lambda kind, payload: summary.append((kind, payload))).summary(
            self.stats, self.fetcher.pool.summary()
        )
        return summary
