"""What becomes of a generated rollout: its record, its verdict (unless the run only generates), the stages' line
limit, and the sink it is handed to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollout_pipeline.collect.events import RolloutFailure, Sink
from rollout_pipeline.collect.protocols import PROTOCOLS, choice_params
from rollout_pipeline.collect.records import scored_record
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.collect.transport import RequestFailed
from rollout_pipeline.collect.work import WorkItem
from rollout_pipeline.jsonl import MAX_LINE_BYTES, dumps

if TYPE_CHECKING:
    from rollout_pipeline.collect.scoring import Scorer


class Handover:
    """A run's generated rollouts, each made the record the stages read and handed to a sink."""

    def __init__(self, settings: CollectSettings) -> None:
        self.s = settings
        # A generate-only run (the pipeline's collect stages: the score stage scores) writes records without a
        # verdict; an agent's own reward comes with its reply, so it is kept either way.
        self.scoring = not settings.generate_only or PROTOCOLS[settings.agent.protocol].agent_server
        self.scorer: Scorer | None = None  # set by the fetcher once its session exists
        if self.scoring:  # imported only then: a generate-only run never runs (nor depends on) the scoring code
            from rollout_pipeline.collect import scoring
            from rollout_pipeline.collect.fingerprint import verifier_fingerprint

            self._scoring = scoring
            self.scored_by = verifier_fingerprint(settings.agent.protocol, settings.agent.verifier)

    async def deliver(
        self,
        item: WorkItem,
        rollout_indexes: list[int],
        generated: list[tuple[Any, dict]],
        params: dict,
        by_n: bool,
        sink: Sink,
    ) -> None:
        """Hand over the rollouts one request of `item` generated (each result with the reply it came in), asked
        with sampling `params` (n choices when `by_n`)."""
        # Scored once each, outside the retries: an output the verifier cannot score fails as it is, and is never
        # replaced by a new sample (which would keep only the outputs the verifier likes).
        for rollout_index, (result, reply) in zip(rollout_indexes, generated):
            # Each record carries the settings that reproduce it alone, choice k of an n request included.
            record = self.record(item, rollout_index, choice_params(params, rollout_index if by_n else 0), result)
            reward = 0.0  # a generate-only run has no mean reward to keep
            if self.scoring:
                try:
                    reward, extras = await self._scoring.score_reply(
                        self.scorer, self.s.agent, item.prompt.row, result, reply
                    )
                except RequestFailed as failure:
                    # The generation stays in the failures file: a fixed verifier re-scores it (rescore), unsent.
                    sink.failure(failed(item, rollout_index, failure, generation=record))
                    continue
                record = scored_record(record, reward, extras, self.scored_by)
            line = dumps(record) + b"\n"
            if len(line) > MAX_LINE_BYTES:  # every record written must be readable by the stages
                sink.failure(
                    RolloutFailure(
                        item.task_index,
                        rollout_index,
                        item.prompt_id,
                        "record_too_large",
                        f"the record is {len(line):,} bytes, over the stages' {MAX_LINE_BYTES:,}-byte line "
                        "limit; lower max_reply_bytes or shorten the prompt",
                    )
                )
                continue
            usage = result.response.get("usage") or {}
            # n choices whose own counts are unknown: the reply's sum is counted once, with the first of them.
            output_tokens = usage.get("output_tokens")
            if output_tokens is None and rollout_index == rollout_indexes[0]:
                output_tokens = usage.get("output_tokens_all_choices")
            sink.rollout(
                item.task_index,
                rollout_index,
                line,
                reward,
                int(usage.get("input_tokens") or 0),
                int(output_tokens or 0),
            )

    def record(self, item: WorkItem, rollout_index: int, params: dict, result: Any) -> dict:
        """The generation record (scoring.GENERATION_FIELDS, then the row's own fields); scoring adds the verdict."""
        record = {
            "prompt_id": item.prompt_id,
            "task_index": item.task_index,
            "rollout_index": rollout_index,
            "agent_name": self.s.agent_name,
            "input": item.prompt.messages,
            "output": result.output,
            "responses_create_params": params,
            "response": result.response,
        }
        if self.s.model_revision:  # the policy version: which model and checkpoint generated this rollout
            record["policy_version"] = {"model": self.s.agent.model, "checkpoint": self.s.model_revision}
        for key, value in item.prompt.row.items():
            if key not in record:
                record[key] = value
        return record


def failed(
    item: WorkItem, rollout_index: int, failure: RequestFailed, generation: dict | None = None
) -> RolloutFailure:
    """One rollout of `item` that failed as its request (or its scoring) did."""
    return RolloutFailure(
        item.task_index,
        rollout_index,
        item.prompt_id,
        failure.cause,
        str(failure),
        failure.skip,
        failure.reply,
        failure.response,
        generation,
    )
