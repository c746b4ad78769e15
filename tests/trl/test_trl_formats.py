"""The SFT and DPO files are what TRL expects: loaded with `datasets.load_dataset("json")` as a trainer would load them,
recognised as conversational by TRL, and rendered by TRL's own chat-template utilities into prompt and completion
text that splits exactly where our records split the conversation."""

from __future__ import annotations

import pytest

datasets = pytest.importorskip("datasets", reason="the TRL tier runs with `make test-trl`")
data_utils = pytest.importorskip("trl.data_utils", reason="the TRL tier runs with `make test-trl`")

from rollout_pipeline.stages.dpo_pairs import run_pair  # noqa: E402
from rollout_pipeline.stages.sft_filter import run_filter  # noqa: E402
from stage_testkit import filter_config, group, groups, make_rollout, pair_config, with_reasoning, write_rollouts  # noqa: E402

SYSTEM = "<|im_start|>system\nAnswer with a number in \\boxed{}.<|im_end|>\n"


def load(path, tmp_path) -> datasets.Dataset:
    """A JSONL file as TRL's trainers receive it: one split of a json dataset, cached under tmp_path."""
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))


@pytest.fixture
def sft_rollouts(tmp_path):
    """Two prompts: one answered with reasoning, one without (so datasets sees the field in some messages only)."""
    return write_rollouts(
        tmp_path / "sft_rollouts.jsonl",
        [
            with_reasoning(make_rollout("p0", 0, 0, 1.0, "\\boxed{3}", question="1 + 2?"), "1 plus 2 is 3."),
            make_rollout("p1", 1, 0, 1.0, "\\boxed{7}", question="3 + 4?"),
        ],
    )


def test_sft_messages_are_trl_conversational_language_modeling(sft_rollouts, tmp_path, tokenizer):
    run_filter(sft_rollouts, tmp_path / "train.jsonl", filter_config(format="messages"))
    dataset = load(tmp_path / "train.jsonl", tmp_path)
    assert dataset.column_names == ["messages", "prompt_id", "reward"]
    assert all(data_utils.is_conversational(example) for example in dataset)
    texts = [data_utils.maybe_apply_chat_template(example, tokenizer)["text"] for example in dataset]
    assert texts == [
        SYSTEM + "<|im_start|>user\n1 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n1 plus 2 is 3.\n</think>\n\\boxed{3}<|im_end|>\n",
        SYSTEM + "<|im_start|>user\n3 + 4?<|im_end|>\n<|im_start|>assistant\n\\boxed{7}<|im_end|>\n",
    ]


def test_sft_prompt_completion_puts_the_answer_and_its_reasoning_in_the_completion(sft_rollouts, tmp_path, tokenizer):
    run_filter(sft_rollouts, tmp_path / "train.jsonl", filter_config(format="prompt_completion"))
    dataset = load(tmp_path / "train.jsonl", tmp_path)
    assert dataset.column_names == ["prompt", "completion", "prompt_id", "reward"]
    assert all(data_utils.is_conversational(example) for example in dataset)
    rendered = [data_utils.maybe_apply_chat_template(example, tokenizer) for example in dataset]
    assert [(r["prompt"], r["completion"]) for r in rendered] == [
        (
            SYSTEM + "<|im_start|>user\n1 + 2?<|im_end|>\n<|im_start|>assistant\n",
            "<think>\n1 plus 2 is 3.\n</think>\n\\boxed{3}<|im_end|>\n",
        ),
        (SYSTEM + "<|im_start|>user\n3 + 4?<|im_end|>\n<|im_start|>assistant\n", "\\boxed{7}<|im_end|>\n"),
    ]


def test_sft_prompt_completion_renders_the_same_conversation_as_messages(sft_rollouts, tmp_path, tokenizer):
    run_filter(sft_rollouts, tmp_path / "messages.jsonl", filter_config(format="messages"))
    run_filter(sft_rollouts, tmp_path / "prompt_completion.jsonl", filter_config(format="prompt_completion"))
    messages = load(tmp_path / "messages.jsonl", tmp_path)
    prompt_completion = load(tmp_path / "prompt_completion.jsonl", tmp_path)
    for whole, split in zip(messages, prompt_completion, strict=True):
        text = data_utils.apply_chat_template(whole, tokenizer)["text"]
        parts = data_utils.apply_chat_template(split, tokenizer)
        assert parts["prompt"] + parts["completion"] == text
        # SFTTrainer's completion-only loss masks the tokens the prompt and the whole conversation share: exactly the
        # prompt's, so the loss covers the answer (and its reasoning) and nothing of the question.
        prompt_ids = tokenizer.apply_chat_template(split["prompt"], add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        whole_ids = tokenizer.apply_chat_template(split["prompt"] + split["completion"], return_dict=True)["input_ids"]
        assert data_utils.common_prefix_length(prompt_ids, whole_ids) == len(prompt_ids)
        assert tokenizer.decode(whole_ids[len(prompt_ids) :]) == parts["completion"]


@pytest.mark.parametrize(
    "config, expected_pairs",
    [
        (pair_config(), [("p0", "r1=1", "r5=0"), ("p1", "a", "b")]),
        (pair_config(pairs_per_prompt=2), [("p0", "r1=1", "r5=0"), ("p0", "r3=1", "r2=0"), ("p1", "a", "b")]),
        (
            pair_config(strategy="all_pairs", pairs_per_prompt=None, min_margin=0.75),
            [
                ("p0", "r1=1", "r5=0"),
                ("p0", "r1=1", "r2=0"),
                ("p0", "r3=1", "r5=0"),
                ("p0", "r3=1", "r2=0"),
                ("p0", "r1=1", "r4=.25"),
                ("p0", "r3=1", "r4=.25"),
                ("p1", "a", "b"),
            ],
        ),
    ],
    ids=["best_vs_worst", "best_vs_worst-2-per-prompt", "all_pairs-above-0.75"],
)
def test_dpo_pairs_are_trl_conversational_preference_records(config, expected_pairs, tmp_path, tokenizer):
    graded = [(0.5, "r0=.5"), (1.0, "r1=1"), (0.0, "r2=0"), (1.0, "r3=1"), (0.25, "r4=.25"), (0.0, "r5=0")]
    source = write_rollouts(
        tmp_path / "dpo_rollouts.jsonl",
        [*group("p0", 0, graded, question="1 + 2?"), *group("p1", 1, [(1.0, "a"), (0.0, "b")], question="3 + 4?")],
    )
    run_pair(source, tmp_path / "pairs.jsonl", config)
    dataset = load(tmp_path / "pairs.jsonl", tmp_path)
    assert dataset.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "prompt_id",
        "chosen_reward",
        "rejected_reward",
        "margin",
    ]
    assert [(e["prompt_id"], e["chosen"][0]["content"], e["rejected"][0]["content"]) for e in dataset] == expected_pairs
    for example in dataset:
        assert data_utils.is_conversational(example)
        rendered = data_utils.maybe_apply_chat_template(example, tokenizer)
        question = "1 + 2?" if example["prompt_id"] == "p0" else "3 + 4?"
        assert rendered["prompt"] == SYSTEM + f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        assert rendered["chosen"] == example["chosen"][0]["content"] + "<|im_end|>\n"
        assert rendered["rejected"] == example["rejected"][0]["content"] + "<|im_end|>\n"
        # TRL's own split of an implicit-prompt pair (the shared start of both conversations) is our prompt.
        implicit = {
            "chosen": example["prompt"] + example["chosen"],
            "rejected": example["prompt"] + example["rejected"],
        }
        assert data_utils.extract_prompt(implicit) == {key: example[key] for key in ("prompt", "chosen", "rejected")}


def test_whole_files_map_through_trls_template_as_the_trainers_prepare_them(tmp_path, tokenizer):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        groups(*[[(1.0, f"\\boxed{{{i}}}"), (0.0, "no"), (1.0, "\\boxed{0}")] for i in range(1, 21)]),
    )
    run_filter(source, tmp_path / "sft.jsonl", filter_config(format="prompt_completion"))
    run_pair(source, tmp_path / "pairs.jsonl", pair_config(pairs_per_prompt=None))
    for name, rows in [("sft", 40), ("pairs", 20)]:  # 2 answers kept per prompt; 1 disjoint pair (a single wrong one)
        dataset = load(tmp_path / f"{name}.jsonl", tmp_path)
        mapped = dataset.map(data_utils.maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer})
        assert mapped.num_rows == rows
        assert all(text.startswith(SYSTEM) and text.endswith("<|im_start|>assistant\n") for text in mapped["prompt"])
