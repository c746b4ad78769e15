"""Realistic rollout records for stage tests and benchmarks, shaped like the collector's output.

The collector is developed alongside these stages, so tests build their own files here: every
field of the rollout-record contract (DESIGN.md), NeMo Gym's names, Responses-API `response`.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from rollout_pipeline.params import Filter, Health, Metrics, Profile, Report
from rollout_pipeline.params import Pair as PairSection
from rollout_pipeline.stages.dpo_pairs import PairConfig
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.prompt_profile import ProfileConfig
from rollout_pipeline.stages.report_data import BrowserConfig
from rollout_pipeline.stages.sft_filter import FilterConfig
from support import PY, ROOT, SCRIPTS, agent, write_params


def make_rollout(
    prompt_id: str,
    task_index: int,
    rollout_index: int,
    reward: float,
    output: str,
    *,
    question: str | None = None,
    output_tokens: int | None = None,
    **extra,
) -> dict:
    """One rollout record as the collector writes it; `extra` adds or overrides fields."""
    question = question or f"Task {prompt_id}: what is {task_index} + {task_index + 3}?"
    messages = [
        {"role": "system", "content": "Answer with a number in \\boxed{}."},
        {"role": "user", "content": question},
    ]
    tokens = len(output.split()) + 1 if output_tokens is None else output_tokens
    record = {
        "prompt_id": prompt_id,
        "task_index": task_index,
        "rollout_index": rollout_index,
        "agent_name": "math_agent",
        "input": messages,
        "output": output,
        "reward": reward,
        "responses_create_params": {"input": messages, "temperature": 0.7, "top_p": 0.9, "max_output_tokens": 512},
        "response": {
            "id": f"resp_{task_index}_{rollout_index}",
            "object": "response",
            "model": "reference",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": output, "annotations": []}],
                }
            ],
            "usage": {"input_tokens": 21, "output_tokens": tokens, "total_tokens": 21 + tokens},
        },
        "expected_answer": str(2 * task_index + 3),
        "task_id": prompt_id,
        "extracted_answer": output.rsplit("{", 1)[-1].rstrip("}") if "{" in output else None,
    }
    record.update(extra)
    return record


def with_reasoning(rollout: dict, text: str) -> dict:
    """The rollout with a `reasoning` output item before its message, as a reasoning model's reply becomes."""
    rollout["response"]["output"].insert(
        0, {"type": "reasoning", "id": "rs-0", "summary": [], "content": [{"type": "reasoning_text", "text": text}]}
    )
    return rollout


def group(prompt_id: str, task_index: int, results: Sequence[tuple[float, str]], **extra) -> list[dict]:
    """All rollouts of one prompt, from (reward, output) per rollout_index."""
    return [
        make_rollout(prompt_id, task_index, i, reward, output, **extra) for i, (reward, output) in enumerate(results)
    ]


def groups(*results: Sequence[tuple[float, str]]) -> list[dict]:
    """A whole file's records: one group per argument, prompt ids p0, p1, ... in task order."""
    return [record for index, result in enumerate(results) for record in group(f"p{index}", index, result)]


def random_rollouts(num_prompts: int, repeats: int, seed: int = 0, first_task: int = 0) -> Iterable[dict]:
    """Seeded varied data: graded rewards, all-pass / all-fail / tied groups, repeated outputs."""
    rng = random.Random(seed)
    for task in range(first_task, first_task + num_prompts):
        skill = rng.random()
        for rollout in range(repeats):
            answer = 2 * task + 3 if rng.random() < skill else 2 * task + 3 + rng.choice((-1, 1, 10))
            correct = answer == 2 * task + 3
            reward = 1.0 if correct else rng.choice((0.0, 0.0, 0.5))  # 0.5: right number, wrong format
            style = rng.choice(("The answer is", "So we get", "Therefore"))  # 3 styles: duplicates are common
            yield make_rollout(f"q{task:06d}", task, rollout, reward, f"{style} \\boxed{{{answer}}}")


def write_rollouts(path: Path, records: Iterable[dict | str]) -> Path:
    """Write records as JSONL; a str is written as a raw line (for malformed-input tests)."""
    with open(path, "wb") as handle:
        for record in records:
            handle.write(record.encode() if isinstance(record, str) else orjson.dumps(record))
            handle.write(b"\n")
    return path


def stage_params(directory: Path, **sections) -> Path:
    """A params.yaml for stage tests (not the repo's, which other work edits); `sections` override."""
    objectives = {"rl": {"agent_name": "math_agent", "prompts": "data/prompts/math.jsonl", "num_repeats": 4}}
    return write_params(directory, {"math_agent": agent()}, objectives, **sections)


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """Run `python scripts/<name>.py ARGS` as a real process from the repo root, capturing text output."""
    return subprocess.run(
        [PY, str(SCRIPTS / f"{name}.py"), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def filter_config(**changes) -> FilterConfig:
    """The filter stage's settings as params.yaml's defaults give them (the `Filter` and `Health` models'), with
    `changes` to the `filter` section."""
    return FilterConfig.from_params({"filter": Filter(**changes).model_dump(), "health": Health().model_dump()})


def pair_config(**changes) -> PairConfig:
    """The pair stage's settings as params.yaml's defaults give them (the `Pair` and `Health` models'), with
    `changes` to the `pair` section."""
    return PairConfig.from_params({"pair": PairSection(**changes).model_dump(), "health": Health().model_dump()})


def health_config(**changes) -> HealthConfig:
    """The health checks' thresholds as params.yaml's defaults give them (the `Health` model's), with `changes`."""
    return HealthConfig.from_params(Health(**changes).model_dump())


def profile_config(**changes) -> ProfileConfig:
    """The profile stage's settings as params.yaml's defaults give them (the `Profile`, `Metrics` and `Health`
    models'), with `changes` to the `profile` section."""
    sections = {"profile": Profile(**changes), "metrics": Metrics(), "health": Health()}
    return ProfileConfig.from_params({name: model.model_dump() for name, model in sections.items()})


def browser_config(**changes) -> BrowserConfig:
    """The report's rollout browser as params.yaml's defaults give it (the `Report` model's), with `changes`."""
    return BrowserConfig(**Report(**changes).model_dump())
