"""The collector engine: stream prompts, ask the agent for `num_repeats` rollouts each, score, store, resume.

Guarantees:
- bounded parallelism AND a bounded number of live tasks, whatever the input size (memory is flat);
- every finished rollout is on disk before it is counted (the progress file), so a kill loses nothing;
- a failed rollout is retried, then reported in the failures file, and never written with a made-up reward;
- the output is sorted by (task_index, rollout_index) and replaced atomically, only when the run succeeds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.executor import Job, Outcome
from rollout_pipeline.collect.executor_choice import choose_executor
from rollout_pipeline.collect.progress import ProgressStore
from rollout_pipeline.collect.protocols import PROTOCOLS
from rollout_pipeline.collect.protocols.agent import MASKED
from rollout_pipeline.collect.redact import Redactor, agent_headers, without_credentials
from rollout_pipeline.collect.resume import InputPrefix
from rollout_pipeline.collect.run_end import finish, print_reward
from rollout_pipeline.collect.run_input import readable_again, scan_input
from rollout_pipeline.collect.run_loop import Terminated, sigterm_raises
from rollout_pipeline.collect.run_output import already_collected, check_output_path
from rollout_pipeline.collect.run_sink import RunSink
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.collect.verifier_kind import verifier_kind
from rollout_pipeline.coverage import scored_line
from rollout_pipeline.errors import UserError

# One run indexes its rollouts in an array of 8-byte offsets: 100 million rollouts is 800 MB of it.
MAX_ROLLOUTS = 100_000_000


class Collector:
    """One collection run. Use `run()`; it returns the process exit code."""

    def __init__(
        self,
        settings: CollectSettings,
        out: TextIO | None = None,
        err: TextIO | None = None,
        start_server: Callable[[AgentSettings], Any] | None = None,
    ) -> None:
        # `url: embedded` needs a server started for the run; the front end that wires layers supplies how
        # (the engine never imports the reference server). It returns an object with `.url` and `.stop()`.
        self.s = settings
        self.start_server = start_server
        # The streams of the moment of the call, not of the import (a caller may have replaced sys.stdout since).
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stats = RunStats()
        self.store: ProgressStore | None = None
        self.sink: RunSink | None = None
        # Masks the API key and URL credentials in every line, file and error this run writes (set in _run).
        self.redact = Redactor()

    def run(self) -> int:
        """The whole run; returns the exit code. Ctrl-C or SIGTERM at any point (start-up, collection, the final
        write) stops it cleanly: one line says what was kept, exit 130 / 143, and no temp file stays behind."""
        with sigterm_raises():
            try:
                with readable_again(self.s.input_path) as self.s.input_path:
                    return self._run()
            except UserError as exc:  # its message may quote a URL with credentials, or a server echoing the key
                raise UserError(self.redact.text(str(exc))) from None
            except KeyboardInterrupt:
                self._interrupted("interrupted")
                return 130
            except Terminated:
                self._interrupted("terminated")
                return 143
            except BaseException:
                if self.sink is not None:
                    self.sink.close_failures(keep=False)
                raise

    def _run(self) -> int:
        agent = self.s.agent
        scoring = not PROTOCOLS[agent.protocol].agent_server and not self.s.generate_only
        # A row the agent's verifier could never score is found before any request, generate-only or not.
        in_process = not PROTOCOLS[agent.protocol].agent_server and verifier_kind(agent.verifier) == "builtin"
        scan = scan_input(self.s.input_path, self.s.limit, answer_for=agent.verifier if in_process else None)
        self.s.scanned_rows = scan.rows
        if scan.rows * self.s.num_repeats > MAX_ROLLOUTS:
            raise UserError(
                f"{scan.rows:,} rows x num_repeats {self.s.num_repeats:,} = "
                f"{scan.rows * self.s.num_repeats:,} rollouts, over the {MAX_ROLLOUTS:,} one run can index; "
                "split the input, or use +limit"
            )
        headers, self.redact = agent_headers(self.s.agent_name, agent)
        check_output_path(self.s)
        if scoring:  # a verifier that cannot be imported is a configuration error: say so before any file is touched
            from rollout_pipeline.collect.scoring import make_scorer

            make_scorer(agent.protocol, agent.verifier, lambda: None, None, headers)
        if agent.repeat_mode == "n" and not PROTOCOLS[agent.protocol].n_choices:
            raise UserError(f"agent {self.s.agent_name!r}: repeat_mode: n needs protocol: chat")
        identity = self.s.identity(scan.sha256)
        if not self.s.force:
            finished, previous = already_collected(self.s.output_path, identity)
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
                print_reward(self.s, previous.get("reward_mean"), self.out)
                return 0
        self.store = ProgressStore(
            self.s.output_path,
            identity,
            scan.rows,
            self.s.num_repeats,
            source=without_credentials(agent.url),
            input=InputPrefix(self.s.input_path, scan.bytes),
            retry_skipped=(MASKED,) if self.s.retry_masked else (),
        )
        self.store.open()
        print(f"Found {scan.rows} rows!", file=self.out)
        if self.store.resume_note:
            print(self.store.resume_note, file=self.out)
        print(f"Querying with {self.s.parallel} concurrent requests", file=self.out)
        self.out.flush()
        self.sink = RunSink(self.s, self.store, self.stats, self.redact, self.err)
        server = None
        try:
            urls = agent.urls
            if agent.url == "embedded":
                if self.start_server is None:
                    raise UserError(
                        f"agent {self.s.agent_name!r}: url: embedded needs a front end that starts "
                        "the embedded server (scripts/collect.py or ng_collect_rollouts)"
                    )
                server = self.start_server(agent)
                urls = [server.url]
            outcome = self._collect(urls, headers)
        finally:  # Ctrl-C and SIGTERM pass through to run(), which reports what was kept
            if server is not None:
                server.stop()
            self.store.close()
            self.sink.close_bar()
        if self.sink.fatal_error is not None:
            self.sink.close_failures(keep=True)
            raise self.sink.fatal_error
        return finish(self.s, self.sink, outcome, self.out, self.err)

    def _interrupted(self, how: str) -> None:
        if self.sink is not None:
            self.sink.close_bar()  # first, so that the summary is the last line, not the bar's final redraw
            self.sink.close_failures(keep=False)
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

    def _collect(self, urls: list[str], headers: dict[str, str]) -> Outcome:
        """Fetch every pending rollout with the executor the settings and the work call for; this process stays
        the only writer."""
        assert self.store is not None and self.sink is not None
        store, sink = self.store, self.sink
        pending = store.total - store.settled
        parallel = max(1, min(self.s.parallel, pending))
        requests = pending if self.s.agent.repeat_mode == "separate" else -(-pending // self.s.num_repeats)
        executor = choose_executor(self.s, parallel, requests)
        executor.connect()  # an unreachable cluster: said before any file is written
        sink.executor = executor
        sink.open_failures()
        job = Job(
            self.s,
            urls,
            headers,
            store.is_done,
            sink,
            self.stats,
            parallel,
            pending_requests=requests,
            pending_tasks=-(-pending // self.s.num_repeats),
            started=sink.make_bar,
        )
        self.stats.collect_started = time.perf_counter()
        try:
            outcome = executor.collect(job)
        finally:
            self.stats.collect_ended = time.perf_counter()
        if outcome.ended and sink.fatal_error is None:
            if store.settled + self.stats.failures < store.total:
                sink.fatal_error = UserError(
                    "; ".join(outcome.ended) + "; the finished rollouts are kept: run the same "
                    "command again to collect the rest"
                )
            else:  # it had sent everything it collected: the run is complete
                sink.say("note: " + "; ".join(outcome.ended) + " after its last rollout")
        return outcome
