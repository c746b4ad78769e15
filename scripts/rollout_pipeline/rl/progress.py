"""The RL loop's progress: each iteration's rewards read back, the per-iteration line, the table and its CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import read_records
from rollout_pipeline.rl.names import (
    eval_metrics_path,
    metrics_path,
    prompt_set_name,
    sampling_metrics_path,
    train_metrics_path,
)

PROGRESS_COLUMNS = (
    "iteration",
    "reward_mean",
    "pass@1",
    "temperature",
    "prompts",
    "zero_variance_fraction",
    "prompts_drawn",
    "groups_kept",
    "eval_reward_mean",
    "eval_pass@1",
    "token_mult_prob_error",
    "max_abs_logp_error",
)


def reward_line(key: str, reward_mean: float | None) -> str:
    """The seed's per-iteration line: `Iteration 005: avg_reward=0.612`."""
    return f"Iteration {key}: avg_reward={'null' if reward_mean is None else format(reward_mean, '.3f')}"


def average_reward(path: str | os.PathLike) -> float | None:
    """Mean reward of a rollout file, as `jq -s 'map(.reward) | add/length'` computes it (None if empty)."""
    total, count = 0.0, 0
    for record in read_records(path):
        total += float(record["reward"])
        count += 1
    return total / count if count else None


def read_iteration_metrics(key: str, path: Path | None = None, stage: str = "rl_metrics") -> dict:
    """Iteration `key`'s metrics (metrics/rl/iter_NNN.json; `path` and `stage` name another, e.g. its eval)."""
    path = metrics_path(key) if path is None else path
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `make rl-iter N={int(key)}` (or dvc repro {stage}@{key})") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object of metrics")
    return doc


def progress_rows(params: dict, upto: str | None = None, missing_ok: bool = False) -> list[dict[str, Any]]:
    """One row per iteration of params.yaml (up to `upto`): the collection's reward_mean, pass@1, temperature, prompt
    set, zero_variance_fraction, prompts drawn and groups kept (stages/dynamic_sampling.py), and the fixed-temperature evaluation's eval_reward_mean and eval_pass@1 (empty
    when `missing_ok` and the evaluation has not run)."""
    rows = []
    for key, entry in sorted(params["rl"]["iterations"].items()):
        if upto is not None and key > upto:
            break
        if missing_ok and not metrics_path(key).exists():
            continue
        metrics = read_iteration_metrics(key)
        evaluation = (
            {}
            if missing_ok and not eval_metrics_path(key).exists()
            else read_iteration_metrics(key, eval_metrics_path(key), "rl_eval")
        )
        on_policy = _on_policy(key)
        sampling_file = sampling_metrics_path(key)
        sampling = read_iteration_metrics(key, sampling_file, "rl_collect") if sampling_file.exists() else {}
        rows.append(
            {
                "iteration": int(key),
                "reward_mean": metrics.get("reward_mean"),
                "pass@1": metrics.get("pass@1"),
                "temperature": entry["temperature"],
                "prompts": prompt_set_name(entry["prompts"]),
                "zero_variance_fraction": metrics.get("zero_variance_fraction"),
                "prompts_drawn": sampling.get("prompts_drawn"),
                "groups_kept": sampling.get("groups_kept"),
                "eval_reward_mean": evaluation.get("reward_mean"),
                "eval_pass@1": evaluation.get("pass@1"),
                "token_mult_prob_error": on_policy.get("token_mult_prob_error"),
                "max_abs_logp_error": on_policy.get("max_abs_logp_error"),
            }
        )
    return rows


def _on_policy(key: str) -> dict:
    """Iteration `key`'s on-policy check, as its trainer reported it ({} when the trainer reports none, or has not run)."""
    path = train_metrics_path(key)
    if not path.exists():
        return {}
    check = read_iteration_metrics(key, path, "rl_train").get("on_policy")
    return check if isinstance(check, dict) else {}


def progress_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PROGRESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_table(rows: list[dict[str, Any]]) -> str:
    """The reward progression, as the seed prints it at the end of its loop (one line per iteration)."""
    # The on-policy column appears when a trainer reported its check (the LoRA trainer), so the reference loop's
    # table stays the seed's.
    checked = any(row.get("token_mult_prob_error") is not None for row in rows)
    lines = [
        "Reward progression:",
        f"{'iteration':>9}  {'avg_reward':>10}  {'pass@1':>7}  {'temperature':>11}  {'eval_reward':>11}  "
        + ("on_policy_err  " if checked else "")
        + "prompts",
    ]
    for row in rows:
        reward, pass1, evaluation = (
            _three_places(row.get(name)) for name in ("reward_mean", "pass@1", "eval_reward_mean")
        )
        on_policy = f"{_three_places(row.get('token_mult_prob_error')):>13}  " if checked else ""
        lines.append(
            f"{row['iteration']:09d}"[-3:].rjust(9)
            + f"  {reward:>10}  {pass1:>7}  {row['temperature']:>11}  {evaluation:>11}  {on_policy}{row['prompts']}"
        )
    if not rows:
        lines.append("  (no iterations yet: make rl-iter N=1)")
    else:
        lines.append(
            "(eval_reward: the checkpoint trained in that iteration, at the fixed rl.eval temperature on held-out "
            "prompts: learning without the annealing)"
        )
        if checked:
            lines.append(
                "(on_policy_err: token_mult_prob_error, the mean exp(|logp_train - logp_infer|) over the sampled "
                "tokens, checked by the trainer before it trains; rl.train.max_token_mult_prob_error fails it)"
            )
    return "\n".join(lines)


def _three_places(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
