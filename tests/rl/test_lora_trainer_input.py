"""The LoRA trainer's input and advantages, without a model: its module imports torch only when it loads one, so
these run in the project's own virtualenv. The model side is tested against vLLM (tests/vllm/test_lora_trainer.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollout_pipeline.rl import lora_trainer


def _record(task: int, score: float, **changes) -> dict:
    record = {
        "prompt_id": f"p{task}",
        "task_index": task,
        "reward": score,
        "responses_create_params": {"temperature": 0.8, "seed": 1},
        "response": {
            "output": [
                {
                    "type": "message",
                    "prompt_token_ids": [1, 2, 3],
                    "generation_token_ids": [4, 5],
                    "generation_log_probs": [-0.5, -1.25],
                    "generation_log_probs_mode": "raw_logprobs",
                }
            ]
        },
    }
    last = record["response"]["output"][-1]
    for key, value in changes.items():
        target = record if key in record else last
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return record


def _write(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_samples_keep_the_servers_token_ids_and_logprobs_exactly_and_raw_ones_compare_at_temperature_one(tmp_path):
    (sample,) = lora_trainer.read_samples(_write(tmp_path, [_record(0, 1.0)]))
    assert (sample.prompt_ids, sample.generation_ids, sample.recorded_logprobs) == ([1, 2, 3], [4, 5], [-0.5, -1.25])
    assert sample.scale == 1.0  # raw logprobs are before temperature, whatever temperature sampled


def test_processed_logprobs_compare_against_the_distribution_at_the_sampling_temperature(tmp_path):
    processed = _record(0, 1.0, generation_log_probs_mode="processed_logprobs")
    (sample,) = lora_trainer.read_samples(_write(tmp_path, [processed]))
    assert sample.scale == 0.8


def test_advantages_are_the_reward_minus_the_prompts_mean_and_optionally_over_its_std(tmp_path):
    samples = lora_trainer.read_samples(
        _write(
            tmp_path,
            [_record(0, 1.0), _record(0, 0.0), _record(0, 0.0), _record(0, 1.0), _record(1, 1.0), _record(1, 1.0)],
        )
    )
    assert lora_trainer.advantages(samples, divide_by_std=False) == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    normalized = lora_trainer.advantages(samples, divide_by_std=True)
    assert normalized == pytest.approx([1.0, -1.0, -1.0, 1.0, 0.0, 0.0], abs=1e-5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"generation_token_ids": None}, "'generation_token_ids' must be a non-empty list of token ids"),
        ({"prompt_token_ids": [1, "2"]}, "'prompt_token_ids' must be a non-empty list of token ids"),
        ({"generation_log_probs": [-0.5]}, "'generation_log_probs' must be one finite number per generation token"),
        ({"generation_log_probs_mode": None}, "'generation_log_probs_mode' is None, not one of raw_logprobs"),
        ({"reward": True}, "'reward' must be a finite number, got True"),
        ({"responses_create_params": {"temperature": 0.0}}, "temperature is 0.0; a policy gradient needs sampled"),
        (
            {
                "responses_create_params": {"temperature": 0.7, "top_p": 0.9},
                "generation_log_probs_mode": "processed_logprobs",
            },
            "processed logprobs under top_p/top_k are not the softmax this trainer computes",
        ),
    ],
)
def test_a_record_the_trainer_cannot_use_is_refused_naming_the_file_and_line(tmp_path, changes, message):
    path = _write(tmp_path, [_record(0, 1.0), _record(0, 0.0, **changes)])
    with pytest.raises(lora_trainer.InputError, match="^" + str(path).replace(".", r"\.") + ":2: ") as caught:
        lora_trainer.read_samples(path)
    assert message in str(caught.value)


def test_an_empty_rollout_file_is_refused(tmp_path):
    path = _write(tmp_path, [])
    with pytest.raises(lora_trainer.InputError, match="no rollouts; did collect run"):
        lora_trainer.read_samples(path)


def test_the_adapter_config_lists_target_modules_sorted_so_the_same_training_writes_the_same_bytes(tmp_path):
    # PEFT saves target_modules from a set, in an order that changes with PYTHONHASHSEED.
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 8, "target_modules": ["v_proj", "k_proj", "q_proj", "o_proj"]}))
    lora_trainer.sort_target_modules(config)
    assert json.loads(config.read_text()) == {"r": 8, "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"]}


def test_an_init_folder_without_an_adapter_is_the_base_model_and_settings_come_as_words(tmp_path):
    """The RL loop passes checkpoint 000 (a copy of the base model) as --init, and every setting as one word."""
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    base.mkdir()
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    common = ["--rollouts", "r.jsonl", "--base", str(base), "--metrics", "m.json", "--out", "o"]
    args = lora_trainer._arguments([*common, "--init", str(base), "--divide-by-std", "false"])
    assert args.init is None and args.divide_by_std is False
    args = lora_trainer._arguments([*common, "--init", str(adapter), "--divide-by-std", "true", "--micro-batch", "2"])
    assert args.init == adapter and args.divide_by_std is True and args.micro_batch == 2
    assert lora_trainer._arguments([*common, "--divide-by-std"]).divide_by_std is True
