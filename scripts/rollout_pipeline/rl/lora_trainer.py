"""The real-model RL trainer: a PPO-clipped policy gradient on the sampled tokens, training a LoRA adapter on CPU.

Run by the vLLM tier's interpreter (torch, transformers, peft), which lacks this project's packages, so it imports
nothing of ours:

    .venv-vllm/bin/python scripts/rollout_pipeline/rl/lora_trainer.py --rollouts data/rl/rl_iter_002.jsonl \
        --base .venv-vllm/models/smollm2-135m --init data/rl/checkpoints/iter_001 \
        --out data/rl/checkpoints/iter_002 --metrics metrics/rl/train_002.json --lr 1e-4 --steps 2 --seed 0

One iteration:
  1. Read the rollout records (collected with agent `token_data: ids`): each one's prompt_token_ids and
     generation_token_ids exactly as the server sampled them (never re-tokenized), the logprobs it recorded
     (generation_log_probs) and how it computed them (generation_log_probs_mode), and the reward.
  2. The on-policy check: this trainer's logprobs of the sampled tokens under the checkpoint that sampled them
     (--init, or the base model without it) against the recorded ones: mean |delta logp|, token_mult_prob_error
     (mean of exp(|delta logp|), as NeMo RL reports it) and the max. Over --max-token-mult-prob-error the run stops
     before training: the data is not what this checkpoint would sample.
     What is compared: raw_logprobs are the model's distribution before temperature (vLLM's default), so they are
     compared with log_softmax(logits) whatever temperature sampled them; processed_logprobs are the distribution
     sampled from, so they are compared with log_softmax(logits / temperature) (top_p or top_k would change it
     further: such records are refused).
  3. Advantages are group-relative: a rollout's reward minus the mean reward of its prompt's rollouts (optionally
     divided by their std). The loss is PPO's clipped surrogate per token, with the importance ratio taken
     against the recorded logprobs, averaged over all generated tokens; --steps full-batch AdamW steps.
  4. The adapter (PEFT's format, which vLLM's POST /v1/load_lora_adapter reads) is written next to --out and
     renamed into place; its fingerprint (sha256 of its files) goes into the metrics.
Same rollouts, init, settings and seed -> the same adapter. The model computes in float32 from the bf16 weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ADAPTER_CONFIG = "adapter_config.json"
MODES = ("raw_logprobs", "processed_logprobs")
STD_EPSILON = 1e-6
LIKELY_CAUSES = (
    "the likely causes: the server does not serve the checkpoint this trainer loaded (a weight-refit bug: an adapter "
    "not loaded, loaded under another name, or a stale one), or the logprobs are not the kind the records say "
    "(raw against processed: vLLM's --logprobs-mode must match generation_log_probs_mode)"
)


class InputError(Exception):
    """Bad input: a one-line message naming the file and line, or the setting."""


@dataclass
class Sample:
    """One rollout as the trainer needs it."""

    where: str
    group: object
    reward: float
    prompt_ids: list[int]
    generation_ids: list[int]
    recorded_logprobs: list[float]
    scale: float  # logits are divided by this before log_softmax: 1 for raw logprobs, the temperature for processed


def _int_list(value, where: str, name: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise InputError(
            f"{where}: '{name}' must be a non-empty list of token ids (collect with agent token_data: ids)"
        )
    return value


def _sample(record: dict, where: str) -> Sample:
    output = (record.get("response") or {}).get("output") if isinstance(record.get("response"), dict) else None
    if not isinstance(output, list) or not output or not isinstance(output[-1], dict):
        raise InputError(f"{where}: record has no response.output items")
    last = output[-1]
    prompt_ids = _int_list(last.get("prompt_token_ids"), where, "prompt_token_ids")
    generation_ids = _int_list(last.get("generation_token_ids"), where, "generation_token_ids")
    logprobs = last.get("generation_log_probs")
    if (
        not isinstance(logprobs, list)
        or len(logprobs) != len(generation_ids)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in logprobs)
    ):
        raise InputError(f"{where}: 'generation_log_probs' must be one finite number per generation token")
    mode = last.get("generation_log_probs_mode")
    if mode not in MODES:
        raise InputError(f"{where}: 'generation_log_probs_mode' is {mode!r}, not one of {', '.join(MODES)}")
    reward = record.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise InputError(f"{where}: 'reward' must be a finite number, got {reward!r}")
    params = record.get("responses_create_params") if isinstance(record.get("responses_create_params"), dict) else {}
    temperature = params.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise InputError(
            f"{where}: responses_create_params.temperature is {temperature!r}; a policy gradient needs "
            "sampled rollouts (temperature > 0)"
        )
    if mode == "processed_logprobs" and (
        params.get("top_p") not in (None, 1, 1.0) or params.get("top_k") not in (None, -1, 0)
    ):
        raise InputError(
            f"{where}: processed logprobs under top_p/top_k are not the softmax this trainer computes; "
            "collect with raw logprobs (vLLM's default --logprobs-mode)"
        )
    task = record.get("task_index")
    group = task if isinstance(task, int) and not isinstance(task, bool) else record.get("prompt_id")
    if group is None:
        raise InputError(f"{where}: record has neither 'task_index' nor 'prompt_id' (which prompt's group is it?)")
    return Sample(
        where,
        group,
        float(reward),
        prompt_ids,
        generation_ids,
        [float(v) for v in logprobs],
        float(temperature) if mode == "processed_logprobs" else 1.0,
    )


def read_samples(path: Path) -> list[Sample]:
    """Every record of a rollout file, validated; errors name the file and line."""
    samples = []
    try:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{where}: not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise InputError(f"{where}: a record must be a JSON object")
                samples.append(_sample(record, where))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if not samples:
        raise InputError(f"{path}: no rollouts; did collect run?")
    return samples


def advantages(samples: list[Sample], divide_by_std: bool) -> list[float]:
    """Each rollout's reward minus its group's mean reward (divided by the group's std when asked)."""
    groups: dict[object, list[float]] = {}
    for sample in samples:
        groups.setdefault(sample.group, []).append(sample.reward)
    stats = {}
    for group, rewards in groups.items():
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
        stats[group] = (mean, std)
    result = []
    for sample in samples:
        mean, std = stats[sample.group]
        advantage = sample.reward - mean
        result.append(advantage / (std + STD_EPSILON) if divide_by_std and std > 0 else advantage)
    return result


def fingerprint(folder: Path) -> str:
    """A content identity of a checkpoint folder: sha256 over its files' names and bytes (16 hex digits)."""
    digest = hashlib.sha256()
    for item in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(folder)}\0{item.stat().st_size}\0".encode())
        with open(item, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class Policy:
    """The model with its LoRA adapter, and the logprobs of sampled tokens under it."""

    def __init__(self, base: Path, init: Path | None, rank: int, alpha: float, seed: int) -> None:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        logging.disable_progress_bar()  # its carriage returns would fill a log; loading takes seconds
        self.torch = torch
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        if init is not None:
            model = PeftModel.from_pretrained(model, init, is_trainable=True)
        else:
            config = LoraConfig(
                r=rank,
                lora_alpha=alpha,
                lora_dropout=0.0,
                target_modules=LORA_TARGETS,
                bias="none",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
        model.eval()  # no dropout anywhere: the gradient flows all the same
        self.model = model

    def all_logprobs(self, samples: list[Sample], micro_batch: int):
        """`logprobs` over every sample, `micro_batch` at a time (without gradients): the logits of a whole batch
        ([batch, length, vocabulary], 49152 words here) would take gigabytes."""
        torch = self.torch
        width = max(len(s.generation_ids) for s in samples)
        parts = [self.logprobs(samples[i : i + micro_batch], width) for i in range(0, len(samples), micro_batch)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def logprobs(self, samples: list[Sample], width: int | None = None):
        """(logprobs, mask): [batch, `width` or the longest generation] tensors of each sampled token's logprob."""
        torch = self.torch
        longest = max(len(s.prompt_ids) + len(s.generation_ids) for s in samples)
        ids = torch.zeros((len(samples), longest), dtype=torch.long)
        attention = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, sample in enumerate(samples):
            sequence = sample.prompt_ids + sample.generation_ids
            ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
        logits = self.model(input_ids=ids, attention_mask=attention).logits  # right padding: positions are 0..n
        generated = width or max(len(s.generation_ids) for s in samples)
        out = torch.zeros((len(samples), generated))
        mask = torch.zeros((len(samples), generated))
        for row, sample in enumerate(samples):
            start, count = len(sample.prompt_ids), len(sample.generation_ids)
            # The logits at position p predict the token at p + 1.
            scaled = logits[row, start - 1 : start - 1 + count] / sample.scale
            picked = torch.log_softmax(scaled, dim=-1).gather(-1, torch.tensor(sample.generation_ids)[:, None])[:, 0]
            out[row, :count] = picked
            mask[row, :count] = 1
        return out, mask


def recorded(samples: list[Sample], like):
    """The server's logprobs laid out like `like` (a [batch, longest generation] tensor), zero past each end."""
    values = like.new_zeros(like.shape)
    for row, sample in enumerate(samples):
        values[row, : len(sample.recorded_logprobs)] = like.new_tensor(sample.recorded_logprobs)
    return values


def on_policy_check(mine, mask, samples: list[Sample]) -> dict:
    """The trainer's logprobs of the sampled tokens against the server's: mean |delta|, token_mult_prob_error, max."""
    delta = (mine - recorded(samples, mine)).abs() * mask
    tokens = int(mask.sum().item())
    return {
        "tokens": tokens,
        "mean_abs_logp_error": round(float(delta.sum().item() / tokens), 6),
        "token_mult_prob_error": round(float(((delta.exp() - 1) * mask).sum().item() / tokens + 1), 6),
        "max_abs_logp_error": round(float(delta.max().item()), 6),
        "logprobs_compared": sorted(
            {
                "raw: log_softmax(logits)" if s.scale == 1.0 else "processed: log_softmax(logits / temperature)"
                for s in samples
            }
        ),
    }


def train(
    policy: Policy, samples: list[Sample], advantage: list[float], lr: float, steps: int, clip: float, micro_batch: int
) -> dict:
    """`steps` full-batch AdamW steps on PPO's clipped surrogate, the gradient summed over micro-batches of
    `micro_batch` samples (the same step, in bounded memory); returns per-step losses and times."""
    torch = policy.torch
    trainable = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    tokens = sum(len(s.generation_ids) for s in samples)
    losses, seconds, clipped = [], [], []
    for _ in range(steps):
        started = time.monotonic()
        optimizer.zero_grad()
        loss_sum, outside_sum = 0.0, 0.0
        for first in range(0, len(samples), micro_batch):
            chunk = samples[first : first + micro_batch]
            logprobs, mask = policy.logprobs(chunk)
            ratio = torch.exp(logprobs - recorded(chunk, logprobs))
            weights = torch.tensor(advantage[first : first + micro_batch])[:, None]
            surrogate = torch.minimum(ratio * weights, ratio.clamp(1 - clip, 1 + clip) * weights)
            loss = -(surrogate * mask).sum() / tokens
            loss.backward()
            loss_sum += float(loss.item())
            outside_sum += float((((ratio - 1).abs() > clip).float() * mask).sum().item())
        optimizer.step()
        losses.append(round(loss_sum, 6))
        clipped.append(round(outside_sum / tokens, 6))
        seconds.append(round(time.monotonic() - started, 3))
        # A step takes minutes on a small CPU: say how far training is.
        print(
            f"lora_trainer: step {len(losses)}/{steps}: loss {losses[-1]}, clipped {clipped[-1]}, {seconds[-1]} s",
            file=sys.stderr,
            flush=True,
        )
    return {"losses": losses, "clip_fractions": clipped, "step_seconds": seconds}


def logp_shift(before, after, mask, advantage: list[float]) -> dict:
    """Mean change of the sampled tokens' logprobs over training, for rollouts with a positive and a negative advantage."""
    change = ((after - before) * mask).sum(dim=1) / mask.sum(dim=1)
    shift = {}
    for name, keep in (("positive_advantage", lambda a: a > 0), ("negative_advantage", lambda a: a < 0)):
        rows = [float(change[i].item()) for i, a in enumerate(advantage) if keep(a)]
        shift[name] = round(sum(rows) / len(rows), 6) if rows else None
    return shift


def write_adapter(policy: Policy, out: Path) -> None:
    """Save the adapter beside `out` and rename it into place, so `out` is whole or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        policy.model.save_pretrained(staging)
        sort_target_modules(staging / ADAPTER_CONFIG)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def sort_target_modules(config: Path) -> None:
    """PEFT keeps target_modules as a set and saves it in hash order, which changes from run to run: sorted, the same
    training writes the same bytes (and fingerprint)."""
    value = json.loads(config.read_text())
    if isinstance(value.get("target_modules"), list):
        value["target_modules"] = sorted(value["target_modules"])
        config.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(value, stream, indent=2)
        stream.write("\n")
    os.replace(temporary, path)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=Path, required=True, help="one iteration's rollout file (token_data: ids)")
    parser.add_argument("--base", type=Path, required=True, help="the base model's Hugging Face folder")
    parser.add_argument(
        "--init",
        type=Path,
        help="the adapter that sampled the rollouts (none, or a folder without "
        "an adapter such as the base model's: the base model did)",
    )
    parser.add_argument("--out", type=Path, help="where the trained adapter goes (required unless --check-only)")
    parser.add_argument("--metrics", type=Path, required=True, help="the JSON metrics file to write")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=2, help="full-batch gradient steps")
    parser.add_argument("--clip", type=float, default=0.2, help="PPO clip range of the importance ratio")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank of a new adapter (vLLM's --max-lora-rank: 8)")
    parser.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha of a new adapter")
    parser.add_argument(
        "--divide-by-std",
        nargs="?",
        const="true",
        default="false",
        choices=["true", "false"],
        help="divide advantages by their group's std (bare or `true`; `false`, the default, does not)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=4,
        help="samples per forward pass (memory, not the result: every step uses the whole batch)",
    )
    # Measured on SmolLM2-135M: 1.03 between this float32 trainer and vLLM's bf16 CPU kernels on the same weights;
    # 1.6 once two gradient steps separate them; over 1000 for raw logprobs read as processed ones at T=0.5.
    parser.add_argument(
        "--max-token-mult-prob-error",
        type=float,
        default=1.1,
        help="the on-policy check fails above this mean exp(|logp_train - logp_infer|)",
    )
    parser.add_argument("--check-only", action="store_true", help="run the on-policy check and stop")
    args = parser.parse_args(argv)
    for name, ok in (
        ("lr", args.lr > 0),
        ("steps", args.steps >= 1),
        ("clip", 0 < args.clip < 1),
        ("rank", 1 <= args.rank <= 8),
        ("alpha", args.alpha > 0),
        ("micro-batch", args.micro_batch >= 1),
        ("max-token-mult-prob-error", args.max_token_mult_prob_error >= 1),
    ):
        if not ok:
            parser.error(f"--{name} {getattr(args, name.replace('-', '_'))} is out of range")
    args.divide_by_std = args.divide_by_std == "true"
    if args.init is not None and args.init.is_dir() and not (args.init / ADAPTER_CONFIG).is_file():
        args.init = None  # a folder without an adapter is the base model itself (the RL loop's checkpoint 000)
    if not args.check_only and args.out is None:
        parser.error("--out is required (or --check-only)")
    for name in ("base", "init"):
        folder = getattr(args, name)
        if folder is not None and not folder.is_dir():
            parser.error(f"--{name} {folder}: no such folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        samples = read_samples(args.rollouts)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    policy = Policy(args.base, args.init, args.rank, args.alpha, args.seed)
    settings = {
        key: getattr(args, key)
        for key in ("lr", "steps", "clip", "rank", "alpha", "divide_by_std", "seed", "max_token_mult_prob_error")
    }
    metrics = {
        "rollouts": str(args.rollouts),
        "samples": len(samples),
        "sampled_by": {
            "checkpoint": str(args.init) if args.init else "base",
            "fingerprint": fingerprint(args.init) if args.init else None,
        },
        "settings": settings,
        "load_seconds": round(time.monotonic() - started, 3),
    }
    with policy.torch.no_grad():
        before, mask = policy.all_logprobs(samples, args.micro_batch)
    check = on_policy_check(before, mask, samples)
    check["passed"] = check["token_mult_prob_error"] <= args.max_token_mult_prob_error
    metrics["on_policy"] = check
    if not check["passed"]:
        write_json(args.metrics, metrics)
        print(
            f"error: {args.rollouts}: on-policy check failed: token_mult_prob_error {check['token_mult_prob_error']} "
            f"> {args.max_token_mult_prob_error} (mean |delta logp| {check['mean_abs_logp_error']}, max "
            f"{check['max_abs_logp_error']}, over {check['tokens']} tokens; compared "
            f"{' and '.join(check['logprobs_compared'])} under {metrics['sampled_by']['checkpoint']}); "
            f"{LIKELY_CAUSES}",
            file=sys.stderr,
        )
        return 1
    if args.check_only:
        write_json(args.metrics, metrics)
        return 0
    advantage = advantages(samples, args.divide_by_std)
    metrics["training"] = train(policy, samples, advantage, args.lr, args.steps, args.clip, args.micro_batch)
    with policy.torch.no_grad():
        after, _ = policy.all_logprobs(samples, args.micro_batch)
    metrics["training"]["logp_shift"] = logp_shift(before, after, mask, advantage)
    metrics["training"]["rollouts_with_signal"] = sum(1 for a in advantage if a != 0)
    write_adapter(policy, args.out)
    metrics["adapter"] = {
        "path": str(args.out),
        "fingerprint": fingerprint(args.out),
        "bytes": sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file()),
    }
    write_json(args.metrics, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
