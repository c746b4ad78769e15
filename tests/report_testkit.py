"""A small run's outputs in a temporary folder, and the report built from them by the real stage scripts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rollout_pipeline.rl.progress import progress_csv
from stage_testkit import make_rollout, random_rollouts, write_rollouts
from support import PY, SCRIPTS, agent, write_params

EVIL = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
BROWSER_PROMPTS = 6
# objective -> (prompts, rollouts per prompt)
SHAPE = {"rl": (6, 4), "sft": (9, 1), "dpo": (8, 4)}
# The browser shows, per sampled prompt, the best, the worst (another rollout when there are two or more) and one
# random other (when there are three or more).
EXPECTED_ROWS = {name: min(prompts, BROWSER_PROMPTS) * min(repeats, 3) for name, (prompts, repeats) in SHAPE.items()}
PROGRESS = [
    {
        "iteration": 1,
        "reward_mean": 0.44,
        "pass@1": 0.44,
        "temperature": 0.9,
        "prompts": "mixed",
        "zero_variance_fraction": 0.08,
        "eval_reward_mean": 0.41,
        "eval_pass@1": 0.41,
    },
    {
        "iteration": 2,
        "reward_mean": 0.52,
        "pass@1": 0.52,
        "temperature": 0.833,
        "prompts": "mixed",
        "zero_variance_fraction": 0.12,
        "eval_reward_mean": 0.47,
        "eval_pass@1": 0.47,
    },
    {
        "iteration": 3,
        "reward_mean": 0.61,
        "pass@1": 0.61,
        "temperature": 0.767,
        "prompts": "mixed",
        "zero_variance_fraction": 0.2,
        "eval_reward_mean": 0.55,
        "eval_pass@1": 0.55,
    },
]


def _records(name: str) -> list[dict]:
    prompts, repeats = SHAPE[name]
    records = list(random_rollouts(prompts, repeats, seed=len(name)))
    for record in records:
        record["difficulty"] = "easy" if record["task_index"] % 2 else "hard"
    if name == "rl":
        # Prompt 0: one right answer, and it carries markup; its best rollout is always in the browser.
        for record in records[:repeats]:
            record["reward"] = 1.0 if record["rollout_index"] == 1 else 0.0
        records[1].update(make_rollout("q000000", 0, 1, 1.0, f"{EVIL} so \\boxed{{3}}", difficulty="hard"))
        records[2]["response"]["status"] = "incomplete"  # cut at the token limit
        records[3]["extracted_answer"] = None
    return records


def build_sample_run(directory: Path) -> Path:
    """The files the report stage reads, made by the real filter and pair scripts where a stage makes them."""
    objectives = {
        name: {"agent_name": "math_agent", "prompts": "data/prompts/math.jsonl", "num_repeats": repeats}
        for name, (_, repeats) in SHAPE.items()
    }
    write_params(
        directory,
        {"math_agent": agent()},
        objectives,
        report={"browser_prompts": BROWSER_PROMPTS, "random_per_prompt": 1, "seed": 0},
    )
    rollouts = directory / "data/rollouts"
    rollouts.mkdir(parents=True)
    for name in SHAPE:
        write_rollouts(rollouts / f"{name}.jsonl", _records(name))
        (rollouts / f"{name}.failures.ndjson").write_text("")
    (rollouts / "rl.failures.ndjson").write_text(
        json.dumps({"prompt_id": "q000005", "task_index": 5, "rollout_index": 4, "cause": "timeout", "skipped": False})
        + "\n"
        + json.dumps(
            {"prompt_id": "q000006", "task_index": 6, "rollout_index": 0, "cause": "context_length", "skipped": True}
        )
        + "\n"
        + json.dumps(
            {
                "prompt_id": "q000006",
                "task_index": 6,
                "rollout_index": 1,
                "cause": "masked",
                "failure_kind": "judge_failed",
                "skipped": True,
                "masked": True,
            }
        )
        + "\n"
    )
    (rollouts / "rl.stats.json").write_text(json.dumps({"rollouts": 24, "retries": {"http_503": 3}}))
    for script, source, out, summary in (
        ("filter", "sft", "data/sft/train.jsonl", "metrics/sft_filter.json"),
        ("pair", "dpo", "data/dpo/pairs.jsonl", "metrics/dpo_pairs.json"),
    ):
        (directory / out).parent.mkdir(parents=True, exist_ok=True)
        (directory / summary).parent.mkdir(parents=True, exist_ok=True)
        run(directory, script, "--in", f"data/rollouts/{source}.jsonl", "--out", out, "--summary", summary)
    (directory / "metrics/rl_progress.csv").write_text(progress_csv(PROGRESS))
    return directory


def run(directory: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """`python scripts/<script>.py ARGS` in `directory`, which must succeed."""
    result = subprocess.run(
        [PY, str(SCRIPTS / f"{script}.py"), *args], cwd=directory, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_report(directory: Path, out: str = "reports") -> Path:
    """The report stage's script on the sample run; returns the report folder."""
    run(directory, "report", "--out", out)
    return directory / out
