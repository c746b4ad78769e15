"""The run's sink in this process, whichever executor fetched: finished rollouts into the progress file, failures
into the failures file, the counters, the progress bar and the lines on stderr; a fatal error stops the executor."""

from __future__ import annotations

import math
import os
import time
from typing import Any, TextIO

from rollout_pipeline.collect.events import RolloutFailure
from rollout_pipeline.collect.executor import Executor
from rollout_pipeline.collect.progress import ProgressStore
from rollout_pipeline.collect.protocols import PROTOCOLS
from rollout_pipeline.collect.protocols.agent import MASKED
from rollout_pipeline.collect.records import failure_entry
from rollout_pipeline.collect.redact import Redactor
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.errors import UserError, printable
from rollout_pipeline.jsonl import dumps, side_path

# Give up early when this many rollouts in a row failed for good: the server is down, not flaky.
MIN_GIVE_UP_STREAK = 20
# A Retry-After wait this long (seconds) is announced, at most once per WAIT_NOTICE_EVERY_S.
WAIT_NOTICE_S = 2.0
WAIT_NOTICE_EVERY_S = 30.0


def unscored(settings: CollectSettings) -> bool:
    """A generate-only run of an agent with a verifier: its records have no reward yet."""
    return settings.generate_only and not PROTOCOLS[settings.agent.protocol].agent_server


class GiveUp(UserError):
    """Too many consecutive failures: stop early, keep progress."""


class RunSink:
    """Where every finished rollout, failure and retry of a run goes, whichever process fetched it."""

    def __init__(
        self, settings: CollectSettings, store: ProgressStore, stats: RunStats, redact: Redactor, err: TextIO
    ) -> None:
        self.s = settings
        self.store = store
        self.stats = stats
        self.redact = redact
        self.err = err
        self.executor: Executor | None = None  # stopped by a fatal error; its request limit shown on the bar
        self.fatal_error: UserError | None = None
        self._failures_handle: Any = None
        self._bar: Any = None
        self._last_wait_notice = -math.inf

    # -- the events ------------------------------------------------------------------------------
    def rollout(
        self, task_index: int, rollout_index: int, line: bytes, reward: float, input_tokens: int, output_tokens: int
    ) -> None:
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
                self.say(
                    f"the server asked to wait {retry_after:g} s before retrying ({cause}, Retry-After); "
                    f"waiting (such waits are shown at most every {WAIT_NOTICE_EVERY_S:g} s)"
                )

    def fatal(self, error: UserError) -> None:
        if self.fatal_error is None:
            self.fatal_error = UserError(self.redact.text(str(error)))
        if self.executor is not None:
            self.executor.stop()

    def note(self, message: str) -> None:
        self.say(f"note: {message}")

    def failure(self, failure: RolloutFailure) -> None:
        task_index, rollout_index, skipped = failure.task_index, failure.rollout_index, failure.skipped
        message, cause = self.redact.text(failure.message), printable(failure.cause)
        entry = failure_entry(
            failure.prompt_id,
            task_index,
            rollout_index,
            cause,
            message,
            skipped,
            failure.reply,
            failure.response,
            failure.generation,
        )
        kind = entry.get("failure_kind")
        self._failures_handle.write(self.redact.json_bytes(dumps(entry)) + b"\n")
        self._failures_handle.flush()
        if skipped:
            # Masked by NeMo Gym, or a property of the prompt (too long for the context): an outcome, never
            # retried, not a failure of the run.
            self.store.add_skip(task_index, rollout_index, cause, message, kind)
            self.say(f"rollout ({task_index}, {rollout_index}) " + ("" if cause == MASKED else "skipped: ") + message)
            self._tick()
            return
        self.stats.failures += 1
        self.stats.failure_causes[cause] = self.stats.failure_causes.get(cause, 0) + 1
        self.stats.failure_streak += 1
        self.stats.last_error = message
        self.say(f"rollout ({task_index}, {rollout_index}) failed: {message}")
        give_up_after = max(MIN_GIVE_UP_STREAK, self.s.parallel)
        if self.stats.failure_streak >= give_up_after and self.fatal_error is None:
            self.fatal(
                GiveUp(f"giving up: the last {self.stats.failure_streak} rollouts all failed (last error: {message})")
            )

    def say(self, line: str) -> None:
        """One line on stderr, above the progress bar when there is one."""
        line = self.redact.text(line)
        if self._bar is not None:
            self._bar.write(line, file=self.err)
        else:
            print(line, file=self.err, flush=True)

    # -- the failures file -----------------------------------------------------------------------
    def open_failures(self) -> None:
        """Start the failures file; the rollouts skipped in an earlier run stay listed in it."""
        path = side_path(self.s.output_path, ".failures.ndjson")
        self._failures_tmp = path.with_name(f".{path.name}.tmp")
        self._failures_handle = open(self._failures_tmp, "wb")
        for task_index, rollout_index, cause, message in self.store.skips:
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

    def close_failures(self, keep: bool) -> None:
        if self._failures_handle is None:
            return
        self._failures_handle.close()
        self._failures_handle = None
        if keep:
            os.replace(self._failures_tmp, side_path(self.s.output_path, ".failures.ndjson"))
        else:
            self._failures_tmp.unlink(missing_ok=True)

    # -- the progress bar ------------------------------------------------------------------------
    def make_bar(self) -> None:
        if not self.s.show_progress:
            return
        from tqdm import tqdm

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

    def close_bar(self) -> None:
        if self._bar is None:
            return
        # The running mean is refreshed at most twice a second; the last view shows the final one.
        if not unscored(self.s):
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
            # The adaptive limit, while it is below the ceiling: a rate-limited server shows here, not as a hang.
            limit = self.executor.request_limit() if self.executor is not None else None
            shown = ([] if unscored(self.s) else [f"reward={mean:.3f}"]) + (
                [f"limit={limit}"] if limit is not None else []
            )
            self._bar.set_postfix_str(", ".join(shown), refresh=False)
