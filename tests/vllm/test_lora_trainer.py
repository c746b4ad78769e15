"""The LoRA trainer (rl/lora_trainer.py) against a genuine vLLM: it agrees with the server on what was sampled, its
adapter loads into the running server under a new name, and the rollouts served under that name are on-policy for
the trained weights and say which policy made them.

Tiny settings (3 prompts x 4 repeats, 24 tokens, 2 gradient steps): these tests check the mechanics, not learning.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import post, vllm_agent
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, default_model_dir
from support import ROOT, collect, make_prompts, read_jsonl, seed_args, write_params

TRAINER = ROOT / "scripts" / "rollout_pipeline" / "rl" / "lora_trainer.py"
THRESHOLD = 1.1  # the trainer's default --max-token-mult-prob-error
ADAPTER_NAME = "smollm2-iter001"


def _trainer(python: str, *args: str) -> subprocess.CompletedProcess:
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [python, str(TRAINER), "--base", str(default_model_dir(python)), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=offline,
    )


def _collect(url: str, directory: Path, out: Path, model: str = MODEL_NAME, *extra: str) -> list[dict]:
    prompts = make_prompts(directory / "p.jsonl", 3, "easy")
    params = write_params(directory, {"math_agent": {**vllm_agent(url, token_data="ids"), "model": model}})
    result = collect(
        [
            *seed_args(
                prompts,
                out,
                num_repeats=4,
                seed=7,
                num_samples_in_parallel=12,
                responses_create_params__temperature=1.0,
                responses_create_params__max_output_tokens=24,
            ),
            *extra,
        ],
        directory,
        params,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return read_jsonl(out)


def _rewrite(records: list[dict], path: Path, change) -> Path:
    for record in records:
        change(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def base_rollouts(vllm, tmp_path_factory) -> Path:
    """Rollouts the base model sampled (raw logprobs, temperature 1)."""
    directory = tmp_path_factory.mktemp("base")
    _collect(vllm.url, directory, directory / "rollouts.jsonl")
    return directory / "rollouts.jsonl"


def test_base_model_rollouts_are_on_policy_under_the_base_weights(vllm_python, base_rollouts, tmp_path):
    result = _trainer(
        vllm_python, "--rollouts", str(base_rollouts), "--metrics", str(tmp_path / "m.json"), "--check-only"
    )
    assert result.returncode == 0, result.stderr
    check = json.loads((tmp_path / "m.json").read_text())["on_policy"]
    records = read_jsonl(base_rollouts)
    assert check["tokens"] == sum(len(r["response"]["output"][-1]["generation_token_ids"]) for r in records)
    assert check["passed"] and 1 <= check["token_mult_prob_error"] < THRESHOLD, check
    assert check["logprobs_compared"] == ["raw: log_softmax(logits)"]
    print(f"on-policy, base under base: {check}")


def test_raw_logprobs_labelled_processed_at_another_temperature_fail_the_check_naming_the_likely_causes(
    vllm_python, base_rollouts, tmp_path
):
    def relabel(record):
        record["response"]["output"][-1]["generation_log_probs_mode"] = "processed_logprobs"
        record["responses_create_params"]["temperature"] = 0.5

    corrupted = _rewrite(read_jsonl(base_rollouts), tmp_path / "relabelled.jsonl", relabel)
    result = _trainer(vllm_python, "--rollouts", str(corrupted), "--metrics", str(tmp_path / "m.json"), "--check-only")
    assert result.returncode == 1
    assert "on-policy check failed: token_mult_prob_error" in result.stderr
    assert "weight-refit bug" in result.stderr and "raw against processed" in result.stderr
    assert "processed: log_softmax(logits / temperature)" in result.stderr
    check = json.loads((tmp_path / "m.json").read_text())["on_policy"]
    assert not check["passed"] and check["token_mult_prob_error"] > THRESHOLD
    print(f"on-policy, raw labelled processed at T=0.5: {check}")


def test_records_without_token_ids_are_refused_naming_the_file_and_line(vllm_python, base_rollouts, tmp_path):
    records = read_jsonl(base_rollouts)
    del records[1]["response"]["output"][-1]["generation_token_ids"]
    bad = _rewrite(records, tmp_path / "bad.jsonl", lambda record: None)
    result = _trainer(
        vllm_python, "--rollouts", str(bad), "--metrics", str(tmp_path / "m.json"), "--out", str(tmp_path / "adapter")
    )
    assert result.returncode == 2
    assert f"{bad}:2: 'generation_token_ids' must be a non-empty list of token ids" in result.stderr
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "m.json").exists()


def test_a_trained_adapter_is_served_under_its_new_name_on_policy_and_its_records_name_it(
    vllm, vllm_python, base_rollouts, tmp_path
):
    # SmolLM2-135M scores about 0 on these prompts, which leaves no advantage to learn from; the trainer's contract
    # is with the rewards in the file, so the first two rollouts of every prompt are declared the good ones.
    def reward(record):
        record["reward"] = 1.0 if record["rollout_index"] < 2 else 0.0

    rollouts = _rewrite(read_jsonl(base_rollouts), tmp_path / "rewarded.jsonl", reward)
    adapter = tmp_path / "checkpoints" / "iter_001"
    result = _trainer(
        vllm_python,
        "--rollouts",
        str(rollouts),
        "--out",
        str(adapter),
        "--metrics",
        str(tmp_path / "train.json"),
        "--lr",
        "2e-3",
        "--steps",
        "2",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "train.json").read_text())
    shift = metrics["training"]["logp_shift"]
    assert shift["positive_advantage"] > 0 > shift["negative_advantage"], shift
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] <= 8
    assert sorted(p.name for p in adapter.parent.iterdir()) == ["iter_001"]  # nothing half-written beside it
    print(f"training: {metrics['training']}, adapter: {metrics['adapter']}, load: {metrics['load_seconds']} s")

    started = time.monotonic()
    loaded = post(vllm.url, "/v1/load_lora_adapter", {"lora_name": ADAPTER_NAME, "lora_path": str(adapter)})
    print(f"load_lora_adapter: {time.monotonic() - started:.2f} s")
    assert loaded.status_code == 200, loaded.text
    try:
        served = tmp_path / "served"
        served.mkdir()
        fingerprint = metrics["adapter"]["fingerprint"]
        records = _collect(vllm.url, served, served / "rollouts.jsonl", ADAPTER_NAME, "--model-revision", fingerprint)
        assert all(r["policy_version"] == {"model": ADAPTER_NAME, "checkpoint": fingerprint} for r in records)

        # The server samples from the trained weights: its logprobs agree with the trainer's under the adapter ...
        result = _trainer(
            vllm_python,
            "--rollouts",
            str(served / "rollouts.jsonl"),
            "--init",
            str(adapter),
            "--metrics",
            str(tmp_path / "served.json"),
            "--check-only",
        )
        assert result.returncode == 0, result.stderr
        print(f"on-policy, adapter under adapter: {json.loads((tmp_path / 'served.json').read_text())['on_policy']}")
        # ... and the base model's rollouts are not what the trained weights would sample: a refit that never
        # happened is caught.
        result = _trainer(
            vllm_python,
            "--rollouts",
            str(base_rollouts),
            "--init",
            str(adapter),
            "--metrics",
            str(tmp_path / "stale.json"),
            "--check-only",
        )
        assert result.returncode == 1 and "weight-refit bug" in result.stderr
        print(
            f"on-policy, base rollouts under adapter: {json.loads((tmp_path / 'stale.json').read_text())['on_policy']}"
        )
    finally:
        post(vllm.url, "/v1/unload_lora_adapter", {"lora_name": ADAPTER_NAME})
