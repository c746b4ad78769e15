"""A scoring run: the verdicts for a file of generated rollouts (or the re-scoring of a scored one), written beside
it as a rollout file, without a single request to the model server.

The input is what the collector wrote: a `.jsonl` of records and its `.failures.ndjson`. Records without a
verdict (a generate-only run) are scored; scored ones are scored again with the verifier given (`reward`,
`scored_by` and the extras it names are replaced). Failures that carry their generation (a verifier that could not
score it in an earlier run) are scored again too; every other failure (the rollout was never generated, or was
skipped) is copied as it is, so the output's coverage counts it. An agent's own reward (protocol: agent) cannot be
re-decided here: such records are kept as they are, checked.

The output is sorted by (task_index, rollout_index) and replaced atomically, with its failures file and stats,
only when at most max_failure_rate of the rollouts failed.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.fingerprint import verifier_fingerprint
from rollout_pipeline.collect.protocols import Result
from rollout_pipeline.collect.protocols.common import response_text
from rollout_pipeline.collect.records import failure_entry, generation_of, row_of, scored_record
from rollout_pipeline.collect.redact import agent_headers, headers_for
from rollout_pipeline.collect.retries import RetryPolicy
from rollout_pipeline.collect.scoring import make_scorer, score_reply
from rollout_pipeline.collect.settings import RequestOptions
from rollout_pipeline.collect.transport import RequestFailed
from rollout_pipeline.collect.verify_pool import VerifyPool
from rollout_pipeline.coverage import coverage, scored_line
from rollout_pipeline.errors import UserError, printable
from rollout_pipeline.jsonl import MAX_LINE_BYTES, atomic_writer, dumps, iter_jsonl, side_path, write_json

# Verdicts asked at once: /verify requests in flight, or in-process verdicts per event-loop pass.
SCORE_PARALLEL = 64


@dataclass
class ScoreSettings:
    """One scoring run: which file, which agent's verifier, and how its /verify requests are made (timeouts,
    retries)."""

    agent_name: str
    agent: AgentSettings
    fetch: RequestOptions
    input_path: Path
    output_path: Path
    max_failure_rate: float = 0.0
    parallel: int = SCORE_PARALLEL


@dataclass(order=True)
class _Item:
    """One rollout to score: a record, or a failure that kept its generation."""

    rank: tuple[int, int]
    where: str  # file:line, for errors
    generation: dict
    agent_reward: Any = None  # protocol agent: the reward the agent gave


class ScoreRun:
    """Score one file. `run()` returns the exit code."""

    def __init__(self, settings: ScoreSettings, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.s = settings
        # The streams of the moment of the call, not of the import (a caller may have replaced sys.stdout since).
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.scored_by = verifier_fingerprint(settings.agent.protocol, settings.agent.verifier)
        self.headers, self.redact = agent_headers(settings.agent_name, settings.agent)
        self.failures: list[dict] = []  # this run's, then written with the copied ones
        self.copied: list[dict] = []  # the input's failures that are not a scoring's to decide
        self.causes: dict[str, int] = {}
        self.skips = 0
        self.retries = 0
        self.written = 0  # scored records, and their reward sum
        self.reward_sum = 0.0
        self._last_verdict = time.monotonic()  # a /verify URL that answers nothing for give_up_after_s is given up

    def run(self) -> int:
        started = time.perf_counter()
        source, target = self.s.input_path, self.s.output_path
        if not source.is_file():
            raise UserError(f"{source}: no such rollout file (the collect stage writes it)")
        if not target.name.endswith(".jsonl"):
            raise UserError(
                f"{target}: the output must be a .jsonl file: its failures and stats files are named after it"
            )
        failures_in = side_path(source, ".failures.ndjson")
        rescored = self._read_failures(failures_in)
        self._score_into(target, rescored)
        scored, reward_sum = self.written, self.reward_sum
        expected = scored + len(self.failures) + len(self.copied)
        total_failures = sum(1 for f in [*self.copied, *self.failures] if not f.get("skipped"))
        allowed = int(self.s.max_failure_rate * expected)
        ok = total_failures <= allowed
        with atomic_writer(side_path(target, ".failures.ndjson")) as handle:
            for entry in sorted([*self.copied, *self.failures], key=lambda f: (f["task_index"], f["rollout_index"])):
                handle.write(self.redact.json_bytes(dumps(entry)) + b"\n")
        causes = dict(self.causes)
        for entry in self.copied:
            causes[entry["cause"]] = causes.get(entry["cause"], 0) + 1
        covered = coverage(expected, scored, causes)
        mean = reward_sum / scored if scored else None
        write_json(
            side_path(target, ".stats.json"),
            {
                "coverage": covered,
                "scored_by": self.scored_by,
                "source": str(source),
                "rescored_failures": len(rescored),
                "verify_retries": self.retries,
                "reward_mean": mean if ok else None,
                "wall_s": round(time.perf_counter() - started, 3),
            },
        )
        print(
            f"{scored_line(covered)} by {self.scored_by['verifier']!s}"
            + (f" ({self.scored_by['hash']})" if "hash" in self.scored_by else "")
            + f"; {len(self.failures) - self.skips} failed here, {self.skips} masked; 0 requests to the model server",
            file=self.err,
        )
        if not ok:
            self._tmp_output.unlink(missing_ok=True)
            print(
                f"error: {total_failures} of {expected} rollouts failed (max_failure_rate {self.s.max_failure_rate} "
                f"allows {allowed}); see {side_path(target, '.failures.ndjson')}; {target} is left as it was",
                file=self.err,
            )
            return 1
        self._tmp_output.replace(target)
        print(
            orjson.dumps({"reward": round(mean, 6) if mean is not None else None}, option=orjson.OPT_INDENT_2)
            .decode()
            .replace("  ", "    "),
            file=self.out,
        )
        return 0

    # -- input ---------------------------------------------------------------------------------------
    def _read_failures(self, path: Path) -> list[_Item]:
        """The input's failures: those that kept their generation are scored again; the rest are copied."""
        again: list[_Item] = []
        if not path.exists():
            return again
        for lineno, entry in iter_jsonl(path):
            generation = entry.get("generation")
            if isinstance(generation, dict):
                again.append(self._item(generation, f"{path}:{lineno}"))
            else:
                self.copied.append(entry)
        return again

    def _records(self) -> Iterator[_Item]:
        for lineno, record in iter_jsonl(self.s.input_path):
            yield self._item(record, f"{self.s.input_path}:{lineno}")

    def _item(self, record: dict, where: str) -> _Item:
        task_index = record.get("task_index", record.get("_ng_task_index"))
        rollout_index = record.get("rollout_index", record.get("_ng_rollout_index"))
        if (
            not isinstance(task_index, int)
            or not isinstance(rollout_index, int)
            or not isinstance(record.get("response"), dict)
        ):
            raise UserError(
                f"{where}: not a rollout record: it needs task_index, rollout_index and a response "
                "object (the collector's records, or NeMo Gym's with _ng_task_index)"
            )
        agent_reward = record.get("reward")
        generation = generation_of(record)
        if "output" not in generation:
            generation["output"] = response_text(generation["response"])
        return _Item((task_index, rollout_index), where, generation, agent_reward)

    # -- scoring -------------------------------------------------------------------------------------
    def _score_into(self, target: Path, rescored: list[_Item]) -> None:
        """Score every item into a temp file beside `target`, which run() renames when the run succeeds."""
        self._tmp_output = target.with_name(f".{target.name}.scoring")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(self._tmp_output, "wb") as handle:
            asyncio.run(self._score_all(heapq.merge(self._records(), sorted(rescored)), handle))

    async def _score_all(self, items: Iterator[_Item], handle: Any) -> None:
        agent, fetch = self.s.agent, self.s.fetch
        timeout = aiohttp.ClientTimeout(
            total=fetch.timeout_s, sock_connect=min(fetch.connect_timeout_s, fetch.timeout_s)
        )
        policy = RetryPolicy(
            fetch.max_retries, fetch.retry_backoff_s, fetch.give_up_after_s, lambda: self._last_verdict
        )
        async with aiohttp.ClientSession(json_serialize=None, skip_auto_headers=("User-Agent",)) as session:
            with VerifyPool(fetch.verify_timeout_s) as pool:
                scorer = make_scorer(
                    agent.protocol,
                    agent.verifier,
                    lambda: session,
                    timeout,
                    headers_for(agent.verifier, agent.urls, self.headers),
                    pool,
                    policy,
                    self._count_retry,
                )
                previous: tuple[int, int] | None = None
                batch: list[_Item] = []
                for item in items:
                    if previous is not None and item.rank <= previous:
                        raise UserError(
                            f"{item.where}: rollout {item.rank} is out of order or repeated; the input "
                            "must be sorted by (task_index, rollout_index), as the collector writes it"
                        )
                    previous = item.rank
                    batch.append(item)
                    if len(batch) == self.s.parallel:
                        await self._score_batch(scorer, batch, handle)
                        batch = []
                await self._score_batch(scorer, batch, handle)

    def _count_retry(self, failure: RequestFailed) -> None:
        self.retries += 1

    async def _score_batch(self, scorer: Any, batch: list[_Item], handle: Any) -> None:
        verdicts = await asyncio.gather(*(self._verdict(scorer, item) for item in batch))
        for item, verdict in zip(batch, verdicts):
            if verdict is None:
                continue
            line = self.redact.json_bytes(dumps(verdict)) + b"\n"
            if len(line) > MAX_LINE_BYTES:
                self._fail(
                    item,
                    "record_too_large",
                    f"the scored record is {len(line):,} bytes, over the stages' {MAX_LINE_BYTES:,}-byte line limit",
                )
                continue
            handle.write(line)
            self.written += 1
            self.reward_sum += verdict["reward"]

    async def _verdict(self, scorer: Any, item: _Item) -> dict | None:
        """The scored record, or None after recording why it could not be scored. An agent's reward is checked as
        the agent gave it (its extras are already fields of the record)."""
        generation = item.generation
        result = Result(generation["response"], str(generation.get("output") or ""), reward=item.agent_reward)
        try:
            reward, extras = await score_reply(scorer, self.s.agent, row_of(generation), result, reply={})
        except RequestFailed as failure:
            self._fail(item, failure.cause, str(failure), skipped=failure.skip, reply=failure.reply)
            return None
        except UserError as exc:  # a data problem (an unusable expected_answer): named with its line
            raise UserError(f"{item.where}: {exc}") from None
        self._last_verdict = time.monotonic()
        return scored_record(generation, reward, extras, self.scored_by)

    def _fail(self, item: _Item, cause: str, message: str, skipped: bool = False, reply: Any = None) -> None:
        cause, message = printable(cause), self.redact.text(message)
        self.failures.append(
            failure_entry(
                item.generation.get("prompt_id"), *item.rank, cause, message, skipped, reply, generation=item.generation
            )
        )
        self.causes[cause] = self.causes.get(cause, 0) + 1
        self.skips += bool(skipped)
        print(f"rollout {item.rank} " + ("not scored: " if skipped else "failed: ") + message, file=self.err)
