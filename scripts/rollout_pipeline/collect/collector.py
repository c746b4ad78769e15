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
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

try:  # imported with the module, under launch.py's Ctrl-C guard: a C extension's import must not be interrupted
    import uvloop
except ImportError:
    uvloop = None

from rollout_pipeline.collect.fetcher import Fetcher, work_items
from rollout_pipeline.collect.processes import auto_processes, collect_in_processes, peak_rss_mb
from rollout_pipeline.collect.progress import ProgressStore
from rollout_pipeline.collect.protocols import PROTOCOLS
from rollout_pipeline.collect.protocols.agent import MASKED
from rollout_pipeline.collect.records import failure_entry
from rollout_pipeline.collect.redact import Redactor, agent_headers, without_credentials
from rollout_pipeline.collect.resume import InputPrefix
from rollout_pipeline.collect.run_input import readable_again, scan_input
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.collect.verifier_kind import verifier_kind
from rollout_pipeline.coverage import coverage, scored_line
from rollout_pipeline.errors import UserError, printable
from rollout_pipeline.jsonl import dumps, side_path, write_json

# Give up early when this many rollouts in a row failed for good: the server is down, not flaky.
MIN_GIVE_UP_STREAK = 20
# A Retry-After wait this long (seconds) is announced, at most once per WAIT_NOTICE_EVERY_S.
WAIT_NOTICE_S = 2.0
WAIT_NOTICE_EVERY_S = 30.0
# Generation-0 GC threshold while collecting (Python's default is 700): see young_gc_threshold().
GC_YOUNG_THRESHOLD = 10_000


# One run indexes its rollouts in an array of 8-byte offsets: 100 million rollouts is 800 MB of it.
MAX_ROLLOUTS = 100_000_000


class Collector:
    """One collection run. Use `run()`; it returns the process exit code."""

    def __init__(
        self,
        settings: CollectSettings,
        out=sys.stdout,
        err=sys.stderr,
        start_server: Callable[[dict], Any] | None = None,
    ) -> None:
        # `url: embedded` needs a server started for the run; the front end that wires layers supplies how
        # (the engine never imports the reference server). It returns an object with `.url` and `.stop()`.
        self.s = settings
        self.start_server = start_server
        self.out = out
        self.err = err
        self.stats = RunStats()
        self.store: ProgressStore | None = None
        self._fetcher: Fetcher | None = None
        self.processes = 1
        self.process_rollouts: list[int] = []
        self.endpoints: dict = {}
        self.executor_stats: dict = {}  # what the Ray executor adds to the stats file
        self._failures_handle: Any = None
        self._bar: Any = None
        self._fatal: BaseException | None = None
        self._last_wait_notice = -math.inf
        # Masks the API key and URL credentials in every line, file and error this run writes (set in _run).
        self.redact = Redactor()

    # -- set-up ----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers, self.redact = agent_headers(self.s.agent_name, self.s.agent)
        return headers

    def _check_output_dir(self) -> None:
        output = self.s.output_path
        if output.is_dir():
            raise UserError(f"{output}: is a directory; give the output a file name, e.g. {output / 'rollouts.jsonl'}")
        if not output.name.endswith(".jsonl"):
            # Its stats and failures files are named from the stem: `X` and `X.jsonl` would share them.
            raise UserError(
                f"{output}: the output must be a .jsonl file (e.g. {output.name}.jsonl): its stats and "
                "failures files are named after it"
            )
        if output.exists() and self.s.input_path.exists() and os.path.samefile(output, self.s.input_path):
            raise UserError(
                f"{output}: the output path is the input file, and writing it would replace the prompts; "
                "give another output path"
            )
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
            with readable_again(self.s.input_path) as self.s.input_path:
                return self._run()
        except UserError as exc:  # its message may quote a URL with credentials, or a server echoing the key
            raise UserError(self.redact.text(str(exc))) from None
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
        scoring = not PROTOCOLS[agent["protocol"]].agent_server and not self.s.generate_only
        # A row the agent's verifier could never score is found before any request, generate-only or not.
        in_process = not PROTOCOLS[agent["protocol"]].agent_server and verifier_kind(agent["verifier"]) == "builtin"
        scan = scan_input(self.s.input_path, self.s.limit, answer_for=agent["verifier"] if in_process else None)
        self.s.scanned_rows = scan.rows
        if scan.rows * self.s.num_repeats > MAX_ROLLOUTS:
            raise UserError(
                f"{scan.rows:,} rows x num_repeats {self.s.num_repeats:,} = "
                f"{scan.rows * self.s.num_repeats:,} rollouts, over the {MAX_ROLLOUTS:,} one run can index; "
                "split the input, or use +limit"
            )
        headers = self._headers()
        self._check_output_dir()
        if scoring:  # a verifier that cannot be imported is a configuration error: say so before any file is touched
            from rollout_pipeline.collect.scoring import make_scorer

            make_scorer(agent["protocol"], agent["verifier"], lambda: None, None, headers)
        if self.s.agent["repeat_mode"] == "n" and not PROTOCOLS[self.s.agent["protocol"]].n_choices:
            raise UserError(f"agent {self.s.agent_name!r}: repeat_mode: n needs protocol: chat")
        identity = self.s.identity(scan.sha256)
        if not self.s.force:
            finished, previous = self._already_collected(identity)
            masked = (previous or {}).get("skip_causes", {}).get(MASKED, 0)
            if finished and self.s.retry_masked and masked:
                ProgressStore.resume_from_output(self.s.output_path, identity, scan.bytes, MASKED)
            elif finished:
                print(f"Found {scan.rows} rows!", file=self.out)
                covered = previous.get("coverage")
                print(
                    f"already collected: {self.s.output_path} holds the rollouts of these settings and is unchanged "
                    f"since; nothing to do (--force collects again"
                    + (", --retry-masked sends the masked ones again" if masked else "")
                    + ")"
                    + (f"; {scored_line(covered)}" if isinstance(covered, dict) else ""),
                    file=self.err,
                )
                self._print_reward(previous.get("reward_mean"))
                return 0
        self.store = ProgressStore(
            self.s.output_path,
            identity,
            scan.rows,
            self.s.num_repeats,
            source=without_credentials(agent["url"]),
            input=InputPrefix(self.s.input_path, scan.bytes),
            retry_skipped=(MASKED,) if self.s.retry_masked else (),
        )
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
                if self.start_server is None:
                    raise UserError(
                        f"agent {self.s.agent_name!r}: url: embedded needs a front end that starts "
                        "the embedded server (scripts/collect.py or ng_collect_rollouts)"
                    )
                server = self.start_server(self.s.agent)
                urls = [server.url]
            elif isinstance(urls, str):
                urls = [urls]
            self._collect(urls, headers)
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

    def _already_collected(self, identity: dict) -> tuple[bool, dict | None]:
        """(whether the output already holds this run identity's rollouts, untouched since they were written, as
        its stats file records; that stats file)."""
        output, stats_path = self.s.output_path, side_path(self.s.output_path, ".stats.json")
        try:
            stats = orjson.loads(stats_path.read_bytes())
            state = output.stat()
        except (OSError, orjson.JSONDecodeError):
            return False, None
        finished = (
            isinstance(stats, dict)
            and stats.get("run_identity") == orjson.loads(dumps(identity))
            and stats.get("output") == {"bytes": state.st_size, "mtime_ns": state.st_mtime_ns}
        )
        return finished, stats if finished else None

    @property
    def unscored(self) -> bool:
        """A generate-only run of an agent with a verifier: its records have no reward yet."""
        return self.s.generate_only and not PROTOCOLS[self.s.agent["protocol"]].agent_server

    def _print_reward(self, mean: float | None) -> None:
        if self.unscored:
            return  # no verdict yet: the score stage prints the mean reward
        print(
            orjson.dumps({"reward": round(mean, 6) if isinstance(mean, float) else None}, option=orjson.OPT_INDENT_2)
            .decode()
            .replace("  ", "    "),
            file=self.out,
        )

    def _interrupted(self, how: str) -> None:
        self._close_bar()  # first, so that the summary is the last line, not the bar's final redraw
        self._close_failures(keep=False)
        if self.store is None:
            print(f"{how}: stopped before any rollout was collected; nothing was written", file=self.err)
        elif not self.store.path.exists():  # stopped after the output was complete and the progress file discarded
            print(f"{how}: all {self.store.total} rollouts were already written to {self.s.output_path}", file=self.err)
        else:
            print(
                f"{how}: {self.store.done} of {self.store.total} rollouts done and kept in {self.store.path}; "
                f"run the same command again to resume",
                file=self.err,
            )

    def _collect(self, urls: list[str], headers: dict[str, str]) -> None:
        """Fetch every pending rollout, here or in several processes; this process stays the only writer."""
        assert self.store is not None
        pending = self.store.total - self.store.settled
        parallel = max(1, min(self.s.parallel, pending))
        requests = pending if self.s.agent["repeat_mode"] == "separate" else -(-pending // self.s.num_repeats)
        self.processes = max(1, min(self.s.processes or auto_processes(parallel, requests), parallel))
        cluster = self._connect_ray() if self.s.executor == "ray" else None  # an unreachable one: before any file
        self._open_failures()
        for task_index, rollout_index, cause, message in self.store.skips:  # skipped in an earlier run: still listed
            kind = self.store.skip_kinds.get((task_index, rollout_index))
            self._failures_handle.write(
                dumps(
                    {
                        "task_index": task_index,
                        "rollout_index": rollout_index,
                        "cause": cause,
                        **({"failure_kind": kind} if kind else {}),
                        "error": message,
                        "skipped": True,
                        **({"masked": True} if cause == MASKED else {}),
                    }
                )
                + b"\n"
            )
        self.stats.collect_started = time.perf_counter()
        try:
            if cluster is not None:
                return self._collect_on_ray(cluster, parallel, urls, headers, requests)
            if self.processes == 1:
                self._make_bar()
                self._fetcher = Fetcher(
                    self.s, urls, headers, self, self.stats, work_items(self.s, self.store.is_done), parallel
                )
                _run_async(self._fetcher.run())
                self.endpoints = self._fetcher.pool.summary()
                self.stats.backoff_wait_s = self._fetcher.retry_policy.waited_s
                return
            self.process_rollouts, ended = collect_in_processes(
                self.s,
                self.processes,
                parallel,
                urls,
                headers,
                self.store.is_done,
                self,
                self.stats,
                self.endpoints,
                should_stop=lambda: self._fatal is not None,
                run_async=_run_async,
                interrupts=(KeyboardInterrupt, _Terminated),
                pending_tasks=-(-pending // self.s.num_repeats),
                forked=self._make_bar,
            )  # after the fork: tqdm starts a monitor thread, which a fork must not copy
            if ended and self._fatal is None:
                if self.store.settled + self.stats.failures < self.store.total:
                    self._fatal = UserError(
                        "; ".join(ended) + "; the finished rollouts are kept: run the same "
                        "command again to collect the rest"
                    )
                else:  # it had sent everything it collected: the run is complete
                    self._say("note: " + "; ".join(ended) + " after its last rollout")
        finally:
            self.stats.collect_ended = time.perf_counter()

    def _connect_ray(self) -> Any:
        from rollout_pipeline.collect.ray_executor import RayCluster

        return RayCluster(self.s.ray_address)

    def _collect_on_ray(
        self, cluster: Any, parallel: int, urls: list[str], headers: dict[str, str], requests: int
    ) -> None:
        """Fetch on Ray workers (collect/ray_executor.py); this process stays the only writer, as with processes."""
        from rollout_pipeline.collect.ray_executor import collect_on_ray

        try:
            self._make_bar()
            outcome = collect_on_ray(
                cluster,
                self.s,
                self.s.workers,
                parallel,
                urls,
                headers,
                self.store.is_done,
                self,
                self.stats,
                self.endpoints,
                should_stop=lambda: self._fatal is not None,
                pending_requests=requests,
            )
        except UserError as exc:  # every worker died, say: what finished is kept, as for any fatal error
            self.fatal(exc)
            return
        finally:
            cluster.shutdown()
        self.processes, self.process_rollouts, self.executor_stats = outcome.workers, outcome.delivered, outcome.stats()

    # -- the sink: every finished rollout, failure and retry, whichever process fetched it --------
    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None:
        assert self.store is not None
        # A server may echo the request's Authorization header inside a successful reply too.
        self.store.add_line(task_index, rollout_index, self.redact.json_bytes(line), reward)
        stats = self.stats
        stats.input_tokens += input_tokens
        stats.output_tokens += output_tokens
        stats.new_rollouts += 1
        stats.reward_sum += reward
        stats.failure_streak = 0
        self._tick()

    def retry(self, cause: str, retry_after: float | None) -> None:
        cause = printable(cause)  # a server may name it (NeMo Gym's failure class): it becomes a stats key
        self.stats.count_retry(cause)
        if retry_after is not None and retry_after >= WAIT_NOTICE_S:
            # A long Retry-After would otherwise look like a hung run; one line per WAIT_NOTICE_EVERY_S is enough.
            now = time.monotonic()
            if now - self._last_wait_notice >= WAIT_NOTICE_EVERY_S:
                self._last_wait_notice = now
                self._say(
                    f"the server asked to wait {retry_after:g} s before retrying ({cause}, Retry-After); "
                    f"waiting (such waits are shown at most every {WAIT_NOTICE_EVERY_S:g} s)"
                )

    def fatal(self, error: UserError) -> None:
        if self._fatal is None:
            self._fatal = UserError(self.redact.text(str(error)))
        if self._fetcher is not None:
            self._fetcher.stop()

    def note(self, message: str) -> None:
        self._say(f"note: {message}")

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
        message, cause = self.redact.text(message), printable(cause)
        entry = failure_entry(
            prompt_id, task_index, rollout_index, cause, message, skipped, reply, response, generation
        )
        kind = entry.get("failure_kind")
        self._failures_handle.write(self.redact.json_bytes(dumps(entry)) + b"\n")
        self._failures_handle.flush()
        if skipped:
            # Masked by NeMo Gym, or a property of the prompt (too long for the context): an outcome, never
            # retried, not a failure of the run.
            assert self.store is not None
            self.store.add_skip(task_index, rollout_index, cause, message, kind)
            self._say(f"rollout ({task_index}, {rollout_index}) " + ("" if cause == MASKED else "skipped: ") + message)
            self._tick()
            return
        self.stats.failures += 1
        self.stats.failure_causes[cause] = self.stats.failure_causes.get(cause, 0) + 1
        self.stats.failure_streak += 1
        self.stats.last_error = message
        self._say(f"rollout ({task_index}, {rollout_index}) failed: {message}")
        give_up_after = max(MIN_GIVE_UP_STREAK, self.s.parallel)
        if self.stats.failure_streak >= give_up_after and self._fatal is None:
            self.fatal(
                _GiveUp(f"giving up: the last {self.stats.failure_streak} rollouts all failed (last error: {message})")
            )

    def _say(self, line: str) -> None:
        """One line on stderr, above the progress bar when there is one."""
        line = self.redact.text(line)
        if self._bar is not None:
            self._bar.write(line, file=self.err)
        else:
            print(line, file=self.err, flush=True)

    # -- files and progress ----------------------------------------------------------------------
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

    def _make_bar(self) -> None:
        if not self.s.show_progress:
            return
        from tqdm import tqdm

        assert self.store is not None
        interactive = self.err.isatty() if hasattr(self.err, "isatty") else False
        self._bar = tqdm(
            total=self.store.total,
            initial=self.store.settled,
            desc="Collecting rollouts",
            file=self.err,
            mininterval=0.2 if interactive else 5.0,
            dynamic_ncols=True,
        )
        self._bar_last = 0.0

    def _close_bar(self) -> None:
        if self._bar is None:
            return
        # The running mean is refreshed at most twice a second; the last view shows the final one.
        if not self.unscored:
            self._bar.set_postfix_str(
                f"reward={self.stats.reward_sum / max(1, self.stats.new_rollouts):.3f}", refresh=True
            )
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
            pool = self._fetcher.pool if self._fetcher is not None else None
            limit = pool.current_limit() if pool is not None else None
            backing_off = limit is not None and limit < pool.ceiling * len(pool.endpoints)
            # The adaptive limit, while it is below the ceiling: a rate-limited server shows here, not as a hang.
            shown = ([] if self.unscored else [f"reward={mean:.3f}"]) + ([f"limit={limit}"] if backing_off else [])
            self._bar.set_postfix_str(", ".join(shown), refresh=False)

    # -- the end ---------------------------------------------------------------------------------
    def _finish(self) -> int:
        assert self.store is not None
        s, stats, store = self.s, self.stats, self.store
        wall = time.perf_counter() - stats.started
        allowed = int(s.max_failure_rate * store.total)
        ok = stats.failures <= allowed and store.settled + stats.failures == store.total
        self._close_failures(keep=True)
        if ok:
            # The mean (resumed rollouts included) comes from the store's exact running sum: no record is
            # decoded again.
            written = store.write_output()
            reward_mean = store.reward_sum.mean(written) if written and not self.unscored else None
            if not s.keep_progress:
                store.discard()
        else:
            written, reward_mean = 0, None
        stats_doc = self._stats_doc(wall, written)
        if ok:  # what makes the same command, run again, a no-op
            state = s.output_path.stat()
            stats_doc.update(
                run_identity=store.identity,
                reward_mean=reward_mean,
                output={"bytes": state.st_size, "mtime_ns": state.st_mtime_ns},
            )
        write_json(side_path(s.output_path, ".stats.json"), stats_doc)
        print(
            f"{scored_line(stats_doc['coverage'])}: {stats.new_rollouts} new rollouts in {stats.collect_s:.1f} s ({stats.throughput():.1f}/s; "
            f"{wall:.1f} s in all), "
            f"{store.done - stats.new_rollouts} resumed, {len(store.skips)} skipped, {stats.failures} failed, "
            f"{stats.requests} requests, retries {stats.retries or 0}",
            file=self.err,
        )
        causes = store.skip_causes()
        masked = causes.pop(MASKED, 0)
        if causes:
            print(
                f"note: {sum(causes.values())} rollouts skipped ({', '.join(f'{c} {n}' for c, n in causes.items())}): "
                f"their prompts can never be scored as they are; see {side_path(s.output_path, '.failures.ndjson')}",
                file=self.err,
            )
        if masked:
            print(
                f"note: {masked} rollouts not scored: masked by NeMo Gym (no valid reward; never in training data); "
                f"see {side_path(s.output_path, '.failures.ndjson')}; --retry-masked sends them again",
                file=self.err,
            )
        if not ok:
            print(
                f"error: {stats.failures} of {store.total} rollouts failed (max_failure_rate {s.max_failure_rate} "
                f"allows {allowed}); last error: {stats.last_error}; see {side_path(s.output_path, '.failures.ndjson')}. "
                f"The {store.done} finished rollouts are kept; run again to retry only the rest.",
                file=self.err,
            )
            return 1
        self._print_reward(reward_mean)
        return 0

    def _stats_doc(self, wall: float, written: int) -> dict:
        assert self.store is not None
        st = self.stats
        return {
            "coverage": coverage(
                self.store.total,
                self.store.done,
                {**st.failure_causes, **self.store.skip_causes()},
                "generated" if self.unscored else "scored",
            ),
            "rollouts": written,
            "new_rollouts": st.new_rollouts,
            "resumed_rollouts": self.store.done - st.new_rollouts,
            "failures": st.failures,
            "failure_causes": st.failure_causes,
            "skipped": len(self.store.skips),
            "skip_causes": self.store.skip_causes(),
            "requests": st.requests,
            "retries": st.retries,
            "wall_s": round(wall, 3),
            "collect_s": round(st.collect_s, 3),
            "throughput_rollouts_per_s": round(st.throughput(), 3),
            "latency_s": st.percentiles(),
            "tokens": {"input": st.input_tokens, "output": st.output_tokens},
            "parallel": self.s.parallel,
            "processes": self.processes,
            **self.executor_stats,
            **({"process_rollouts": self.process_rollouts} if self.process_rollouts else {}),
            # Forked processes share their start-up pages, so the sum overstates the memory actually used.
            "peak_rss_mb": {
                "collector": peak_rss_mb(),
                **(
                    {"processes": [st.process_peak_rss_mb.get(i) for i in range(self.processes)]}
                    if st.process_peak_rss_mb
                    else {}
                ),
            },
            # Per endpoint (no URLs: they may carry credentials): requests, failures, overloads (429s and 503s),
            # the adaptive limit's trace, and the time Retry-After paused it.
            "endpoints": list(self.endpoints.values()),
            "wait_s": {
                "backoff": round(st.backoff_wait_s, 3),
                "retry_after": round(sum(e.get("paused_s", 0) for e in self.endpoints.values()), 3),
            },
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


def _run_async(coro, handle_sigterm: bool = True) -> None:
    """Run the event loop (uvloop when available). Ctrl-C raises KeyboardInterrupt; SIGTERM raises _Terminated
    (unless handle_sigterm is false: a child collector process leaves signals to its parent)."""
    loop_factory = uvloop.new_event_loop if uvloop is not None else None
    with young_gc_threshold(GC_YOUNG_THRESHOLD), asyncio.Runner(loop_factory=loop_factory) as runner:
        loop = runner.get_loop()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            for task in asyncio.all_tasks(loop):
                task.cancel()

        outside_loop = signal.getsignal(signal.SIGTERM)
        if handle_sigterm:
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
            if handle_sigterm:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGTERM)
                    if outside_loop is not None:
                        signal.signal(signal.SIGTERM, outside_loop)
