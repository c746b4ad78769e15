"""The collector engine: stream prompts, ask the agent for `num_repeats` rollouts each, score, store, resume.

Guarantees:
- bounded parallelism AND a bounded number of live tasks, whatever the input size (memory is flat);
- every finished rollout is on disk before it is counted (the progress file), so a kill loses nothing;
- a failed rollout is retried, then reported in the failures file, and never written with a made-up reward;
- the output is sorted by (task_index, rollout_index) and replaced atomically, only when the run succeeds.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import math
import os
import signal
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import aiohttp
import orjson

from .endpoints import EndpointPool
from .errors import UserError
from .jsonl import atomic_writer, dumps, write_json
from .progress import ProgressStore
from .protocols import PATHS, InvalidReply, build_body, parse_reply, sampling_params
from .rows import prompt_id
from .run_input import iter_rows, scan_input
from .scoring import make_scorer
from .transport import RequestFailed, post_json, with_retries

# aiohttp's connection pool size: the cap on concurrent requests when num_samples_in_parallel is null.
POOL_CAP = 1024
# Give up early when this many rollouts in a row failed for good: the server is down, not flaky.
MIN_GIVE_UP_STREAK = 20
# Generation-0 GC threshold while collecting (Python's default is 700): see young_gc_threshold().
GC_YOUNG_THRESHOLD = 10_000


@dataclass
class CollectSettings:
    """Everything one collection run needs, whichever front end built it."""

    agent_name: str
    agent: dict
    input_path: Path
    output_path: Path
    num_repeats: int = 1
    num_samples_in_parallel: int | None = None
    limit: int | None = None
    seed: int | None = None
    max_failure_rate: float = 0.0
    responses_create_params: dict = field(default_factory=dict)
    show_progress: bool = True
    # What the model name alone does not pin down, e.g. a hash of the checkpoint it serves (the RL loop
    # retrains a checkpoint under the same name): part of the identity when set, so a resume never mixes.
    model_revision: str | None = None

    @property
    def parallel(self) -> int:
        return min(self.num_samples_in_parallel or POOL_CAP, POOL_CAP)

    def identity(self, input_sha256: str) -> dict:
        """What decides whether a previous run's progress can be reused. URLs, parallelism, timeouts and
        retries are left out on purpose: they change how rollouts are fetched, not what they are."""
        return {
            "input_sha256": input_sha256,
            "agent_name": self.agent_name,
            "protocol": self.agent["protocol"],
            "model": self.agent["model"],
            "verifier": self.agent["verifier"] if self.agent["protocol"] != "agent" else None,
            "repeat_mode": self.agent["repeat_mode"],
            "num_repeats": self.num_repeats,
            "limit": self.limit,
            "seed": self.seed,
            "responses_create_params": {k: v for k, v in sorted(self.responses_create_params.items()) if v is not None},
            **({"model_revision": self.model_revision} if self.model_revision else {}),
        }


def side_path(output: Path, suffix: str) -> Path:
    """Files that go beside the output: rl.jsonl -> rl.stats.json, rl.failures.ndjson. Neither ends in .jsonl,
    so globs over rollout files (the seed's `outputs/rl_iter_*.jsonl`) never pick them up."""
    stem = output.name[:-len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(f"{stem}{suffix}")


def rollout_seed(base: int, task_index: int, rollout_index: int) -> int:
    """A per-rollout seed derived from the run's seed: reproducible, and different for every rollout."""
    digest = hashlib.blake2b(f"{base}:{task_index}:{rollout_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


@dataclass
class RunStats:
    """Counters for the run's stats file. Latencies live in a fixed-size histogram."""

    started: float = field(default_factory=time.perf_counter)
    new_rollouts: int = 0
    failures: int = 0
    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    failure_causes: dict[str, int] = field(default_factory=dict)
    latencies: "LatencyHistogram" = field(default_factory=lambda: LatencyHistogram())
    input_tokens: int = 0
    output_tokens: int = 0
    reward_sum: float = 0.0
    failure_streak: int = 0
    last_error: str = ""

    def percentiles(self) -> dict[str, float | None]:
        return self.latencies.percentiles((0.50, 0.95, 0.99))


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


class Collector:
    """One collection run. Use `run()`; it returns the process exit code."""

    def __init__(self, settings: CollectSettings, out=sys.stdout, err=sys.stderr) -> None:
        self.s = settings
        self.out = out
        self.err = err
        self.stats = RunStats()
        self.store: ProgressStore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failures_handle: Any = None
        self._bar: Any = None
        self._fatal: BaseException | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        env_name = self.s.agent.get("api_key_env")
        if env_name:
            key = (os.environ.get(env_name) or "").strip()  # a trailing newline from `$(cat keyfile)` is common
            if not key:
                raise UserError(f"agent {self.s.agent_name!r}: environment variable {env_name} is not set "
                                f"(api_key_env names it); export {env_name}=... and run again")
            if any(ord(c) < 32 or ord(c) == 127 for c in key):
                # Never echo the value: it is a secret.
                raise UserError(f"agent {self.s.agent_name!r}: environment variable {env_name} holds a control "
                                f"character (value not shown); export {env_name} as the bare key and run again")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _check_output_dir(self) -> None:
        output = self.s.output_path
        if output.is_dir():
            raise UserError(f"{output}: is a directory; give the output a file name, e.g. {output / 'rollouts.jsonl'}")
        if output.exists() and self.s.input_path.exists() and os.path.samefile(output, self.s.input_path):
            raise UserError(f"{output}: the output path is the input file, and writing it would replace the prompts; "
                            "give another output path")
        directory = self.s.output_path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{directory}: cannot create the output directory ({exc.strerror})") from None
        if not os.access(directory, os.W_OK):
            raise UserError(f"{directory}: output directory is not writable")

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> int:
        """The whole run; returns the exit code. Ctrl-C or SIGTERM at any point (start-up, collection, the final
        write) stops it cleanly: one line says what was kept, exit 130 / 143, and no temp file stays behind."""
        previous = _raise_on_sigterm()
        try:
            return self._run()
        except KeyboardInterrupt:
            self._interrupted("interrupted")
            return 130
        except _Terminated:
            self._interrupted("terminated")
            return 143
        except BaseException:
            self._close_failures(keep=False)
            raise
        finally:
            _restore_sigterm(previous)

    def _run(self) -> int:
        agent = self.s.agent
        in_process = agent["protocol"] != "agent" and agent["verifier"] in ("math", "exact")
        scan = scan_input(self.s.input_path, self.s.limit, answer_for=agent["verifier"] if in_process else None)
        headers = self._headers()
        self._check_output_dir()
        # A verifier that cannot be imported is a configuration error: say so before any file is touched.
        make_scorer(agent["protocol"], agent["verifier"], lambda: self._session, None, headers)
        if self.s.agent["repeat_mode"] == "n" and self.s.agent["protocol"] != "chat":
            raise UserError(f"agent {self.s.agent_name!r}: repeat_mode: n needs protocol: chat")
        self.store = ProgressStore(self.s.output_path, self.s.identity(scan.sha256), scan.rows, self.s.num_repeats)
        self.store.open()
        print(f"Found {scan.rows} rows!", file=self.out)
        if self.store.resume_note:
            print(self.store.resume_note, file=self.out)
        print(f"Querying with {self.s.parallel} concurrent requests", file=self.out)
        self.out.flush()
        server = None
        try:
            urls = self.s.agent["url"]
            if urls == "embedded":
                server = _start_embedded(self.s.agent)
                urls = [server.url]
            elif isinstance(urls, str):
                urls = [urls]
            _run_async(self._collect(urls, headers))
        finally:  # Ctrl-C and SIGTERM pass through to run(), which reports what was kept
            if server is not None:
                server.stop()
            if self.store is not None:
                self.store.close()
            self._close_bar()
        if self._fatal is not None:
            self._close_failures(keep=True)
            raise self._fatal
        return self._finish()

    def _interrupted(self, how: str) -> None:
        self._close_bar()  # first, so that the summary is the last line, not the bar's final redraw
        self._close_failures(keep=False)
        if self.store is None:
            print(f"{how}: stopped before any rollout was collected; nothing was written", file=self.err)
        elif not self.store.path.exists():  # stopped after the output was complete and the progress file discarded
            print(f"{how}: all {self.store.total} rollouts were already written to {self.s.output_path}", file=self.err)
        else:
            print(f"{how}: {self.store.done} of {self.store.total} rollouts done and kept in {self.store.path}; "
                  f"run the same command again to resume", file=self.err)

    async def _collect(self, urls: list[str], headers: dict[str, str]) -> None:
        assert self.store is not None
        connector = aiohttp.TCPConnector(limit=POOL_CAP, limit_per_host=0, ttl_dns_cache=300,
                                         force_close=False, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=self.s.agent["timeout_s"])
        pool = EndpointPool(urls)
        self._open_failures()
        self._make_bar()
        async with aiohttp.ClientSession(connector=connector, json_serialize=None, raise_for_status=False,
                                         skip_auto_headers=("User-Agent",)) as session:
            self._session = session
            scorer = make_scorer(self.s.agent["protocol"], self.s.agent["verifier"], lambda: session, timeout,
                                 _headers_for(self.s.agent["verifier"], urls, headers))
            self.pool, self.timeout, self.headers, self.scorer = pool, timeout, headers, scorer
            await self._schedule()
        self._session = None

    def _work(self) -> Iterator[tuple[int, list[int], dict]]:
        """The requests still to make, in input order: (task_index, rollout_indexes, row), rows read as a stream."""
        assert self.store is not None
        by_n = self.s.agent["repeat_mode"] == "n"
        for task_index, row in enumerate(iter_rows(self.s.input_path, self.s.limit)):
            pending = [r for r in range(self.s.num_repeats) if not self.store.is_done(task_index, r)]
            if not pending:
                continue
            row["_prompt_id"] = prompt_id(row)
            row["_pending"] = len(pending) if not by_n else 1
            if by_n:
                yield task_index, pending, row
            else:
                for rollout_index in pending:
                    yield task_index, [rollout_index], row

    async def _schedule(self) -> None:
        """`parallel` workers share one stream of requests: at most `parallel` in flight and as many live tasks,
        whatever the input size. (A worker per slot, not a task per rollout: no task, semaphore or callback
        churn per request.) Stops early, cancelling what is in flight, when the run turns fatal."""
        assert self.store is not None
        work = self._work()
        finished = asyncio.get_running_loop().create_future()
        count = max(1, min(self.s.parallel, self.store.total - self.store.done))
        running = count

        async def worker() -> None:
            nonlocal running
            try:
                for item in work:  # next() never awaits, so the workers can share the generator
                    if self._fatal is not None:
                        break
                    await self._rollouts(*item)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug: surface it rather than hang the other workers
                if not finished.done():
                    finished.set_exception(exc)
                raise
            finally:
                running -= 1
                if (running == 0 or self._fatal is not None) and not finished.done():
                    finished.set_result(None)

        workers = [asyncio.create_task(worker()) for _ in range(count)]
        try:
            await finished
        finally:
            # On Ctrl-C, SIGTERM or giving up: stop what is in flight; finished rollouts are already on disk.
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            work.close()

    async def _rollouts(self, task_index: int, rollout_indexes: list[int], row: dict) -> None:
        """Fetch, score and store the given rollouts of one prompt (one request, or one with n choices)."""
        try:
            await self._fetch_and_store(task_index, rollout_indexes, row)
        except RequestFailed as failure:
            for rollout_index in rollout_indexes:
                self._record_failure(task_index, rollout_index, row, failure.cause, str(failure))
        except UserError as exc:
            self._fatal = exc
        finally:
            row["_pending"] -= 1
            if row["_pending"] == 0:
                self.pool.forget(task_index)

    async def _fetch_and_store(self, task_index: int, rollout_indexes: list[int], row: dict) -> None:
        s = self.s
        protocol = s.agent["protocol"]
        n = len(rollout_indexes) if s.agent["repeat_mode"] == "n" else 1
        seed = rollout_seed(s.seed, task_index, rollout_indexes[0]) if s.seed is not None else None
        params = sampling_params(row, s.responses_create_params, seed)
        body = dumps(build_body(protocol, row, params, s.agent["model"], n))
        path = PATHS[protocol]

        async def attempt() -> list[tuple[Any, float, dict]]:
            endpoint = self.pool.acquire(task_index)
            self.stats.requests += 1
            ok = False
            try:
                reply, latency = await post_json(self._session, endpoint.url + path, body, self.headers, self.timeout)
                try:
                    results = parse_reply(protocol, reply, n)
                except InvalidReply as exc:
                    raise RequestFailed("invalid_reply", f"{endpoint.url + path}: {exc}", True) from None
                scored = []
                for result in results:
                    try:
                        reward, extras = await self.scorer(row, result)
                    except InvalidReply as exc:
                        raise RequestFailed("invalid_reward", str(exc), True) from None
                    except (RequestFailed, UserError):
                        raise
                    except Exception as exc:  # a verifier's own bug fails this rollout, not the whole run
                        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                        raise RequestFailed("verifier_error", f"verifier {s.agent['verifier']!r} raised {message}",
                                            False) from None
                    if protocol == "agent":
                        extras = {k: v for k, v in reply.items()
                                  if k not in row and k not in ("response", "reward", "responses_create_params")}
                    scored.append((result, reward, extras))
                ok = True
                self.stats.latencies.append(latency)
                return scored
            finally:
                self.pool.release(endpoint, ok)

        scored = await with_retries(attempt, s.agent["max_retries"], s.agent["retry_backoff_s"], self._count_retry)
        assert self.store is not None
        for rollout_index, (result, reward, extras) in zip(rollout_indexes, scored):
            record = self._record(task_index, rollout_index, row, params, result, reward, extras)
            self.store.add(record)
            usage = result.response.get("usage") or {}
            self.stats.input_tokens += int(usage.get("input_tokens") or 0)
            self.stats.output_tokens += int(usage.get("output_tokens") or 0)
            self.stats.new_rollouts += 1
            self.stats.reward_sum += reward
            self.stats.failure_streak = 0
            self._tick()

    def _record(self, task_index: int, rollout_index: int, row: dict, params: dict, result: Any,
                reward: float, extras: dict) -> dict:
        record = {
            "prompt_id": row["_prompt_id"],
            "task_index": task_index,
            "rollout_index": rollout_index,
            "agent_name": self.s.agent_name,
            "input": row["_messages"],
            "output": result.output,
            "reward": reward,
            "responses_create_params": params,
            "response": result.response,
        }
        for key, value in row.items():
            if not key.startswith("_") and key not in record:
                record[key] = value
        for key, value in extras.items():
            if key not in record:
                record[key] = value
        return record

    # -- failures, retries, progress ------------------------------------------------------------
    def _count_retry(self, failure: RequestFailed) -> None:
        self.stats.retries[failure.cause] = self.stats.retries.get(failure.cause, 0) + 1

    def _open_failures(self) -> None:
        path = side_path(self.s.output_path, ".failures.ndjson")
        self._failures_tmp = path.with_name(f".{path.name}.tmp")
        self._failures_handle = open(self._failures_tmp, "wb")

    def _close_failures(self, keep: bool) -> None:
        if self._failures_handle is None:
            return
        self._failures_handle.close()
        self._failures_handle = None
        if keep:
            os.replace(self._failures_tmp, side_path(self.s.output_path, ".failures.ndjson"))
        else:
            self._failures_tmp.unlink(missing_ok=True)

    def _record_failure(self, task_index: int, rollout_index: int, row: dict, cause: str, message: str) -> None:
        self.stats.failures += 1
        self.stats.failure_causes[cause] = self.stats.failure_causes.get(cause, 0) + 1
        self.stats.failure_streak += 1
        self._failures_handle.write(dumps({
            "prompt_id": row["_prompt_id"], "task_index": task_index, "rollout_index": rollout_index,
            "cause": cause, "error": message}) + b"\n")
        self._failures_handle.flush()
        self.stats.last_error = message
        line = f"rollout ({task_index}, {rollout_index}) failed: {message}"
        if self._bar is not None:
            self._bar.write(line, file=self.err)
        else:
            print(line, file=self.err)
        give_up_after = max(MIN_GIVE_UP_STREAK, self.s.parallel)
        if self.stats.failure_streak >= give_up_after and self._fatal is None:
            self._fatal = _GiveUp(f"giving up: the last {self.stats.failure_streak} rollouts all failed "
                                  f"(last error: {message})")

    def _make_bar(self) -> None:
        if not self.s.show_progress:
            return
        from tqdm import tqdm
        assert self.store is not None
        interactive = self.err.isatty() if hasattr(self.err, "isatty") else False
        self._bar = tqdm(total=self.store.total, initial=self.store.done, desc="Collecting rollouts",
                         file=self.err, mininterval=0.2 if interactive else 5.0, dynamic_ncols=True)
        self._bar_last = 0.0

    def _close_bar(self) -> None:
        if self._bar is None:
            return
        # The running mean is refreshed at most twice a second; the last view shows the final one.
        self._bar.set_postfix_str(f"reward={self.stats.reward_sum / max(1, self.stats.new_rollouts):.3f}",
                                  refresh=True)
        self._bar.close()
        self._bar = None

    def _tick(self) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if now - self._bar_last > 0.5:
            self._bar_last = now
            mean = self.stats.reward_sum / max(1, self.stats.new_rollouts)
            self._bar.set_postfix_str(f"reward={mean:.3f}", refresh=False)

    # -- the end ---------------------------------------------------------------------------------
    def _finish(self) -> int:
        assert self.store is not None
        s, stats, store = self.s, self.stats, self.store
        wall = time.perf_counter() - stats.started
        allowed = int(s.max_failure_rate * store.total)
        ok = stats.failures <= allowed and store.done + stats.failures == store.total
        self._close_failures(keep=True)
        if ok:
            written, reward_mean = self._write_output()
            store.discard()
        else:
            written, reward_mean = 0, None
        stats_doc = self._stats_doc(wall, written)
        write_json(side_path(s.output_path, ".stats.json"), stats_doc)
        print(f"{stats.new_rollouts} new rollouts in {wall:.1f} s ({stats_doc['throughput_rollouts_per_s']:.1f}/s), "
              f"{store.total - stats.new_rollouts - stats.failures} resumed, {stats.failures} failed, "
              f"{stats.requests} requests, retries {stats.retries or 0}", file=self.err)
        if not ok:
            print(f"error: {stats.failures} of {store.total} rollouts failed (max_failure_rate {s.max_failure_rate} "
                  f"allows {allowed}); last error: {stats.last_error}; see {side_path(s.output_path, '.failures.ndjson')}. "
                  f"The {store.done} finished rollouts are kept; run again to retry only the rest.", file=self.err)
            return 1
        print(orjson.dumps({"reward": round(reward_mean, 6) if reward_mean is not None else None},
                           option=orjson.OPT_INDENT_2).decode().replace("  ", "    "), file=self.out)
        return 0

    def _write_output(self) -> tuple[int, float | None]:
        """Write sorted records atomically; the mean reward (resumed ones included) comes from the store's
        exact running sum, so no record is decoded again here."""
        assert self.store is not None
        count = 0
        with atomic_writer(self.s.output_path) as out:
            for line in self.store.iter_sorted():
                out.write(line)
                count += 1
        return count, (self.store.reward_sum.value / count if count else None)

    def _stats_doc(self, wall: float, written: int) -> dict:
        assert self.store is not None
        st = self.stats
        return {
            "rollouts": written,
            "new_rollouts": st.new_rollouts,
            "resumed_rollouts": self.store.done - st.new_rollouts,
            "failures": st.failures,
            "failure_causes": st.failure_causes,
            "requests": st.requests,
            "retries": st.retries,
            "wall_s": round(wall, 3),
            "throughput_rollouts_per_s": round(st.new_rollouts / wall, 3) if wall > 0 else 0.0,
            "latency_s": st.percentiles(),
            "tokens": {"input": st.input_tokens, "output": st.output_tokens},
            "parallel": self.s.parallel,
            "endpoints": list(self.pool.summary().values()) if hasattr(self, "pool") else [],
        }


class _GiveUp(UserError):
    """Too many consecutive failures: stop early, keep progress."""


class _Terminated(Exception):
    """SIGTERM arrived; stop like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _raise_on_sigterm():
    """Outside the event loop, SIGTERM raises _Terminated (as Ctrl-C raises KeyboardInterrupt) instead of killing
    the process mid-write. Returns the previous handler (None when not on the main thread: nothing installed)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return None


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _headers_for(url: str, agent_urls: list[str], headers: dict[str, str]) -> dict[str, str]:
    """Headers for a request to `url` (a /verify URL): the agent's API key goes only to the agent's own origins,
    never to another host."""
    if not url.startswith(("http://", "https://")) or any(_origin(url) == _origin(u) for u in agent_urls):
        return headers
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


def _start_embedded(agent: dict):
    from .embedded import start_embedded_server
    args = list(agent.get("embedded_args") or [])
    if agent.get("checkpoint_dir"):
        args += ["--checkpoint-dir", agent["checkpoint_dir"]]
    return start_embedded_server(args)


@contextlib.contextmanager
def young_gc_threshold(threshold: int) -> Iterator[None]:
    """Run a block with a higher generation-0 GC threshold, then restore the previous one.

    aiohttp allocates container objects in bursts (hundreds of replies handled in one event-loop pass), so
    at Python's default threshold (700) a generation-0 collection ran every ~75 requests, each traversing
    all in-flight request state: 12-17% of the collector's CPU, and of a bare aiohttp loop's (see
    bench/RESULTS.md). Garbage is still collected, just in larger batches; memory stays bounded."""
    previous = gc.get_threshold()
    gc.set_threshold(max(threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _run_async(coro) -> None:
    """Run the event loop (uvloop when available). Ctrl-C raises KeyboardInterrupt; SIGTERM raises _Terminated."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop
        loop_factory = uvloop.new_event_loop
    with young_gc_threshold(GC_YOUNG_THRESHOLD), asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            for task in asyncio.all_tasks(loop):
                task.cancel()
        outside_loop = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            runner.run(coro)
        except asyncio.CancelledError:
            if terminated:
                raise _Terminated() from None
            raise
        finally:
            # The loop's handler resets SIGTERM to the default (kill) when removed: put back the one from before.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)
                if outside_loop is not None:
                    signal.signal(signal.SIGTERM, outside_loop)
