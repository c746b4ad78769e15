"""The default RL trainer: REINFORCE with a group baseline, for the embedded reference policy.

    python scripts/train.py --rollouts data/rl/rl_iter_005.jsonl --init data/rl/checkpoints/iter_004 \
        --out data/rl/checkpoints/iter_005 --lr 0.5 --steps 10

It is what `rl.train.cmd` runs by default. A real trainer (NeMo RL, TRL, verl, ...) takes its
place by changing that command; this one only knows the reference policy's checkpoint format
(a logit per candidate kind and difficulty class, see checkpoints.py), which it can update exactly.

The update, per iteration:
  - each rollout's advantage is its reward minus the mean reward of its prompt's group (all
    rollouts of that prompt): groups whose rollouts all scored the same carry no signal;
  - the sampled kind is recovered from the output text (`policy.classify_output`); outputs it
    cannot name (foreign text, ambiguous truncations) and rollouts sampled greedily
    (temperature 0 has no gradient) are skipped and counted;
  - `steps` gradient-ascent steps of size `lr` on the surrogate  mean_i A_i log p_theta(kind_i),
    whose gradient per rollout is `policy.score_function` (d log p / d logits at the rollout's own
    sampling temperature), evaluated at the current logits of each step. Rollouts with a positive
    advantage pull probability toward their kind, the others push it away.
The result is written atomically (`checkpoints.save_checkpoint`) with the iteration's stats as
metadata. Same rollouts, same init, same lr and steps -> the same checkpoint, byte for byte.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rollout_pipeline.errors import UserError
from rollout_pipeline.reference import policy
from rollout_pipeline.reference.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from rollout_pipeline.stages.groups import iter_groups

DIGITS = 6


@dataclass
class Batch:
    """The rollouts of one file reduced to what the gradient needs.

    Rollouts with the same difficulty class, applicable kinds, sampled kind and temperature have the
    same score function, so they are folded into one term: key -> (a prompt of that shape, sum of advantages).
    """

    terms: dict[tuple, tuple[str, float]] = field(default_factory=dict)
    used: int = 0
    rollouts: int = 0
    prompts: int = 0
    zero_variance_prompts: int = 0
    skipped: Counter = field(default_factory=Counter)

    def add(self, prompt: str, kind: str, temperature: float, advantage: float) -> None:
        key = (policy.difficulty_class(prompt), policy.applicable_kinds(prompt), kind, temperature)
        example, total = self.terms.get(key, (prompt, 0.0))
        self.terms[key] = (example, total + advantage)
        self.used += 1


def _temperature(record: dict) -> float | None:
    params = record.get("responses_create_params")
    value = params.get("temperature") if isinstance(params, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def read_batch(path: str | os.PathLike) -> Batch:
    """Read a rollout file (collector order) into a Batch; records are validated as they stream."""
    batch = Batch()
    for _, group in iter_groups(path):
        rollouts = list(group)
        mean = sum(r.reward for r in rollouts) / len(rollouts)
        batch.prompts += 1
        batch.rollouts += len(rollouts)
        if all(r.reward == rollouts[0].reward for r in rollouts):
            batch.zero_variance_prompts += 1
        for rollout in rollouts:
            prompt = policy.prompt_text(rollout.messages())
            kind = policy.classify_output(prompt, rollout.output())
            temperature = _temperature(rollout.record)
            if kind is None:
                batch.skipped["unclassified_output"] += 1
            elif temperature is None or temperature <= 0:
                batch.skipped["no_temperature" if temperature is None else "greedy"] += 1
            else:
                batch.add(prompt, kind, temperature, rollout.reward - mean)
    return batch


def gradient(batch: Batch, checkpoint: Checkpoint) -> dict[str, dict[str, float]]:
    """mean_i A_i * d log p(kind_i) / d logits, per difficulty class, at `checkpoint`'s logits."""
    grad = {cls: dict.fromkeys(policy.CANDIDATE_KINDS, 0.0) for cls in policy.DIFFICULTY_CLASSES}
    if not batch.used:
        return grad
    for (cls, _, kind, temperature), (prompt, advantage) in batch.terms.items():
        if advantage == 0.0:
            continue
        for j, score in policy.score_function(prompt, kind, checkpoint, temperature).items():
            grad[cls][j] += advantage * score / batch.used
    return grad


def train(batch: Batch, init: Checkpoint, lr: float, steps: int) -> Checkpoint:
    """`steps` steps of gradient ascent from `init`; returns the new checkpoint (init is not modified)."""
    if lr <= 0 or steps < 1:
        raise UserError(f"need lr > 0 and steps >= 1, got lr={lr}, steps={steps}")
    current = Checkpoint(init.name, {c: dict(v) for c, v in init.classes.items()}, dict(init.meta))
    for _ in range(steps):
        grad = gradient(batch, current)
        classes = {
            cls: {k: v + lr * grad[cls][k] for k, v in logits.items()} for cls, logits in current.classes.items()
        }
        current = Checkpoint(current.name, classes, current.meta)
    return current


def correct_probability(checkpoint: Checkpoint, difficulty: str, temperature: float = 1.0) -> float:
    """p(correct) under softmax(logits / T) over every kind of a class: a quick summary of a checkpoint."""
    logits = checkpoint.logits(difficulty)
    top = max(logits.values())
    weights = {kind: math.exp((value - top) / temperature) for kind, value in logits.items()}
    return weights["correct"] / sum(weights.values())


def run(rollouts: str, init: str, out: str, lr: float, steps: int) -> list[str]:
    """The trainer stage: read, train, write atomically; returns the summary lines to print."""
    batch = read_batch(rollouts)
    try:
        start = load_checkpoint(init)
    except CheckpointError as exc:
        raise UserError(f"--init: {exc}") from None
    trained = train(batch, start, lr, steps)
    classes = {cls: {k: round(v, DIGITS) for k, v in logits.items()} for cls, logits in trained.classes.items()}
    skipped = dict(sorted(batch.skipped.items()))
    meta = {
        "notes": "Reference-policy checkpoint written by the REINFORCE trainer (scripts/train.py).",
        "parent": Path(init).name,
        "trainer": {
            "algorithm": "reinforce-group-baseline",
            "lr": lr,
            "steps": steps,
            "rollouts": batch.rollouts,
            "used": batch.used,
            "skipped": skipped,
            "prompts": batch.prompts,
            "zero_variance_prompts": batch.zero_variance_prompts,
        },
    }
    save_checkpoint(out, classes, **meta)
    written = load_checkpoint(out)
    before = ", ".join(f"{c} {correct_probability(start, c):.3f}" for c in policy.DIFFICULTY_CLASSES)
    after = ", ".join(f"{c} {correct_probability(written, c):.3f}" for c in policy.DIFFICULTY_CLASSES)
    lines = [
        f"trained on {batch.used} of {batch.rollouts} rollouts ({batch.prompts} prompts, "
        f"{batch.zero_variance_prompts} with no reward variance), lr {lr}, {steps} steps -> {out}",
        f"p(correct) at T=1: {before} -> {after}",
    ]
    if skipped:
        lines.append("skipped: " + ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in skipped.items()))
    if not batch.used:
        lines.append("warning: no rollout could be used; the checkpoint is unchanged")
    return lines
