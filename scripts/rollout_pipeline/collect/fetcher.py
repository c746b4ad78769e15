"""The async half of a collection run: take the work from a WorkSource and ask the agent; each finished rollout (or
failure) goes to a sink, scored on the way (handover.py).

The sink owns the run's files. When the fetcher runs in this process it is the run's sink (run_sink.py: progress
file, stats, progress bar); in a collector process or on a Ray worker it is an EventWriter (events.py) whose events
this process takes in, so it stays the only writer. Either way the fetcher never writes a file.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp

from rollout_pipeline.collect.endpoints import EndpointPool
from rollout_pipeline.collect.events import Sink
from rollout_pipeline.collect.handover import Handover, failed
from rollout_pipeline.collect.protocols import (
    PROTOCOLS,
    ChoicesShortfall,
    InvalidReply,
    NotFinished,
    asks_for_logprobs,
    build_body,
    label_logprobs,
    logprobs_mode,
    other_model,
    parse_reply,
    sampling_params,
)
from rollout_pipeline.collect.redact import headers_for
from rollout_pipeline.collect.retries import RetryPolicy, with_retries
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import POOL_CAP, CollectSettings
from rollout_pipeline.collect.transport import RequestFailed, post_json
from rollout_pipeline.collect.work import WorkItem, WorkSource
from rollout_pipeline.errors import UserError, printable
from rollout_pipeline.jsonl import dumps


def rollout_seed(base: int, task_index: int, rollout_index: int) -> int:
    """A per-rollout seed derived from the run's seed: reproducible, and different for every rollout."""
    digest = hashlib.blake2b(f"{base}:{task_index}:{rollout_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class Fetcher:
    """`parallel` slots share one source of work: at most `parallel` requests in flight and as many live
    tasks, whatever the input size. (A worker per slot, not a task per rollout: no task, semaphore or callback
    churn per request.)"""

    def __init__(
        self,
        settings: CollectSettings,
        urls: list[str],
        headers: dict[str, str],
        sink: Sink,
        stats: RunStats,
        work: WorkSource,
        parallel: int,
    ) -> None:
        self.s = settings
        self.urls = urls
        self.headers = headers
        self.sink = sink
        self.stats = stats
        self.work = work
        self.parallel = parallel
        self.pool = EndpointPool(urls, ceiling=parallel)
        self._other_models: set[str] = set()  # model names replies gave instead of the one asked, each noted once
        agent, fetch = settings.agent, settings.fetch
        self.retry_policy = RetryPolicy(
            fetch.max_retries, fetch.retry_backoff_s, fetch.give_up_after_s, lambda: self.pool.last_success
        )
        self.logprobs_mode = logprobs_mode(agent.logprobs_mode, agent.url)
        self.handover = Handover(settings)
        self._stopped = False
        self._finished: asyncio.Future | None = None
        self._session: aiohttp.ClientSession | None = None
        # Set when the server answered repeat_mode n with fewer choices than asked (it ignores `n`): from then on
        # each rollout is its own request.
        self.n_ignored = False

    def stop(self) -> None:
        """Stop early: no new requests; what is in flight is cancelled (finished rollouts are the sink's)."""
        self._stopped = True
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=POOL_CAP, limit_per_host=0, ttl_dns_cache=300, force_close=False, enable_cleanup_closed=True
        )
        agent, fetch = self.s.agent, self.s.fetch
        # A host that drops packets (a firewall, a wrong address) fails within the connect timeout, not after
        # the full timeout_s, which is sized for a long generation.
        self.timeout = aiohttp.ClientTimeout(
            total=fetch.timeout_s, sock_connect=min(fetch.connect_timeout_s, fetch.timeout_s)
        )
        async with aiohttp.ClientSession(
            connector=connector, json_serialize=None, raise_for_status=False, skip_auto_headers=("User-Agent",)
        ) as session:
            self._session = session
            if not self.handover.scoring:
                await self._schedule()
            else:
                from rollout_pipeline.collect.scoring import make_scorer
                from rollout_pipeline.collect.verify_pool import VerifyPool

                with VerifyPool(fetch.verify_timeout_s) as pool:
                    self.handover.scorer = make_scorer(
                        agent.protocol,
                        agent.verifier,
                        lambda: session,
                        self.timeout,
                        headers_for(agent.verifier, self.urls, self.headers),
                        pool,
                        self.retry_policy,
                        lambda failure: self.sink.retry(failure.cause, failure.retry_after),
                    )
                    await self._schedule()
        self._session = None

    async def _schedule(self) -> None:
        self._finished = asyncio.get_running_loop().create_future()
        if self._stopped:
            return
        running = self.parallel
        finished = self._finished

        async def slot() -> None:
            nonlocal running
            try:
                while not self._stopped:
                    item = await self.work.get()
                    if item is None:
                        break
                    try:
                        await self._rollouts(item, self.work.sink_for(item) or self.sink)
                    finally:
                        self.work.done(item)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug: surface it rather than hang the other slots
                if not finished.done():
                    finished.set_exception(exc)
                raise
            finally:
                running -= 1
                if running == 0 and not finished.done():
                    finished.set_result(None)

        slots = [asyncio.create_task(slot()) for _ in range(self.parallel)]
        try:
            await finished
        finally:
            # On Ctrl-C, SIGTERM or stop(): cancel what is in flight; finished rollouts are already the sink's.
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            self.work.close()

    async def _rollouts(self, item: WorkItem, sink: Sink) -> None:
        """Fetch, score and hand over the given rollouts of one prompt (one request, or one with n choices)."""
        try:
            await self._fetch(item, sink)
        except RequestFailed as failure:
            for rollout_index in item.rollout_indexes:
                sink.failure(failed(item, rollout_index, failure))
        except UserError as exc:
            sink.fatal(exc)
        finally:
            item.pending.requests -= 1
            if item.pending.requests == 0:
                self.pool.forget(item.task_index)

    async def _fetch(self, item: WorkItem, sink: Sink) -> None:
        if self.s.agent.repeat_mode == "n" and not self.n_ignored:
            try:
                return await self._fetch_one(item, item.rollout_indexes, sink, by_n=True)
            except _NIgnored as shortfall:
                if not self.n_ignored:
                    self.n_ignored = True
                    sink.note(
                        f"the server answered n={shortfall.asked} with {shortfall.got} choice(s): it ignores "
                        "`n`, so each rollout is now its own request (set repeat_mode: separate for this "
                        "agent to skip this probe)"
                    )
        for rollout_index in item.rollout_indexes:
            await self._fetch_one(item, [rollout_index], sink, by_n=False)

    async def _fetch_one(self, item: WorkItem, rollout_indexes: list[int], sink: Sink, by_n: bool) -> None:
        s = self.s
        task_index, row = item.task_index, item.prompt.row
        protocol = s.agent.protocol
        # repeat_mode n always asks for every choice with the seed of choice 0, and keeps the ones still missing:
        # a resume after a kill between two choices of one reply then gets exactly an uninterrupted run's choices.
        choices = list(range(s.num_repeats)) if by_n else rollout_indexes
        n = len(choices) if by_n else 1
        seed = rollout_seed(s.seed, task_index, choices[0]) if s.seed is not None else None
        params = sampling_params(protocol, row, s.responses_create_params, seed)
        try:
            request = build_body(
                protocol, item.prompt, params, s.agent.model, n, s.agent.token_data, (task_index, choices[0])
            )
        except UserError as exc:
            raise UserError(f"{s.input_path} row {task_index + 1}: {exc}") from None
        body = dumps(request)
        wants_logprobs = not PROTOCOLS[protocol].agent_server and asks_for_logprobs(request)
        path = PROTOCOLS[protocol].path

        async def attempt() -> list[tuple[Any, dict]]:
            endpoint = self.pool.acquire(task_index)
            try:
                ticket = await endpoint.limit.acquire()  # the endpoint's adaptive limit, and its overload pause
            except BaseException:
                self.pool.release(endpoint, True)  # never sent
                raise
            self.stats.requests += 1
            ok = False
            try:
                reply, latency = await post_json(
                    self._session, endpoint.url + path, body, self.headers, self.timeout, s.fetch.max_reply_bytes
                )
                try:
                    results = parse_reply(protocol, reply, n, params.get("max_output_tokens"))
                except ChoicesShortfall as exc:
                    if n > 1:
                        ok = True  # the server is healthy; it only ignores `n`
                        raise _NIgnored(exc.asked, exc.got) from None
                    raise RequestFailed("invalid_reply", f"{endpoint.url + path}: {exc}", True) from None
                except NotFinished as exc:
                    ok = True
                    raise RequestFailed(
                        exc.cause,
                        f"{endpoint.url + path}: {exc}",
                        exc.retryable,
                        skip=exc.skip,
                        reply=exc.reply,
                        response=exc.response,
                    ) from None
                except InvalidReply as exc:
                    raise RequestFailed("invalid_reply", f"{endpoint.url + path}: {exc}", True, reply=reply) from None
                label_logprobs(results, wants_logprobs, self.logprobs_mode, endpoint.url + path)
                self._note_other_model(results[0].response, sink)
                if len(rollout_indexes) < n:
                    results = [results[index] for index in rollout_indexes]
                ok = True
                self.stats.latencies.append(latency)
                return [(result, reply) for result in results]
            except RequestFailed as failure:
                if failure.overload:
                    endpoint.limit.overloaded(ticket, failure.retry_after, failure.server_wide)
                raise
            finally:
                endpoint.limit.release(ticket, ok)
                self.pool.release(endpoint, ok)

        generated = await with_retries(
            attempt, self.retry_policy, lambda failure: sink.retry(failure.cause, failure.retry_after)
        )
        await self.handover.deliver(item, rollout_indexes, generated, params, by_n, sink)

    def _note_other_model(self, response: dict, sink: Sink) -> None:
        """Say once per name (per process) when replies come from another model than the one asked (an alias, or
        another model behind the URL): the records keep the server's name."""
        answered = other_model(response, self.s.agent.model)
        if answered is not None and answered not in self._other_models:
            self._other_models.add(answered)
            sink.note(
                f"the server answers as model {printable(repr(answered[:200]))} although "
                f"{printable(repr(self.s.agent.model))} "
                "was asked (an alias or served-model-name, or another model behind the URL); the records "
                "keep the server's name"
            )


class _NIgnored(Exception):
    """The server returned fewer choices than `n`: not a fault to retry, a capability it lacks."""

    def __init__(self, asked: int, got: int) -> None:
        super().__init__(f"expected {asked} choices, got {got}")
        self.asked = asked
        self.got = got
