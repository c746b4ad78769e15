"""The seed document's SFT and DPO snippets, run verbatim, agree with the filter and pair stages.

Users arrive with these snippets (000_46c80efc949f60b0.txt, "Configure Sampling Parameters");
the stages must give them the same data, plus what the snippets lack (streaming, errors, dedupe,
skipping pairs that carry no preference).
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import orjson
import pytest

from rollout_pipeline.stages.dpo_pairs import run_pair
from rollout_pipeline.stages.sft_filter import run_filter
from stage_testkit import filter_config, groups, pair_config, random_rollouts, write_rollouts
from support import read_jsonl

SEED_DOC = Path(__file__).resolve().parent / "seed_docs" / "000_46c80efc949f60b0.txt"

# Copied verbatim from the seed document; do not edit (test_snippets_are_verbatim checks them).
SFT_SNIPPET = """\
# Filter to high-reward rollouts only
high_quality = [r for r in rollouts if r["reward"] >= 0.8]
"""

DPO_SNIPPET = """\
# Group by prompt, pair high/low reward
from itertools import groupby

pairs = []
for prompt_id, group in groupby(rollouts, key=lambda r: r["prompt_id"]):
    sorted_group = sorted(group, key=lambda r: r["reward"], reverse=True)
    if len(sorted_group) >= 2:
        pairs.append({
            "prompt": sorted_group[0]["input"],
            "chosen": sorted_group[0]["output"],
            "rejected": sorted_group[-1]["output"],
        })
"""


@pytest.fixture(scope="module")
def rollout_file(tmp_path_factory) -> Path:
    """Hand-made edge cases first, then a seeded random batch (graded rewards, ties, duplicate outputs)."""
    edge_cases = groups(
        [(1.0, "best0"), (0.0, "worst1"), (1.0, "best2"), (0.0, "worst3")],  # ties at both ends
        [(1.0, "same"), (1.0, "same"), (1.0, "other")],  # all tied, with a duplicate
        [(0.0, "no"), (0.0, "nope")],  # all tied at zero
        [(0.9, "alone")],  # a single rollout
        [(0.8, "edge"), (0.79, "just below"), (0.8, "edge")],  # the 0.8 boundary, duplicated
    )
    path = tmp_path_factory.mktemp("seed") / "rollouts.jsonl"
    return write_rollouts(path, [*edge_cases, *random_rollouts(120, 4, seed=7, first_task=len(edge_cases))])


def run_snippet(snippet: str, rollouts: list[dict]) -> dict:
    namespace = {"rollouts": rollouts}
    exec(snippet, namespace)
    return namespace


def prompt_key(messages: list[dict]) -> bytes:
    return orjson.dumps(messages)


def test_snippets_are_verbatim_copies_of_the_seed_document():
    text = SEED_DOC.read_text()
    assert SFT_SNIPPET in text and DPO_SNIPPET in text


def test_filter_keeps_exactly_what_the_sft_snippet_keeps_when_dedupe_is_off(rollout_file, tmp_path):
    high_quality = run_snippet(SFT_SNIPPET, read_jsonl(rollout_file))["high_quality"]
    run_filter(rollout_file, tmp_path / "sft.jsonl", filter_config(min_reward=0.8, dedupe=False))
    ours = read_jsonl(tmp_path / "sft.jsonl")
    assert [(r["prompt_id"], r["messages"], r["reward"]) for r in ours] == [
        (r["prompt_id"], [*r["input"], {"role": "assistant", "content": r["output"]}], r["reward"])
        for r in high_quality
    ]


def test_filter_with_dedupe_keeps_the_same_prompts_and_each_distinct_output_once(rollout_file, tmp_path):
    high_quality = run_snippet(SFT_SNIPPET, read_jsonl(rollout_file))["high_quality"]
    run_filter(rollout_file, tmp_path / "sft.jsonl", filter_config(min_reward=0.8, dedupe=True))
    ours = [(r["prompt_id"], r["messages"][-1]["content"]) for r in read_jsonl(tmp_path / "sft.jsonl")]
    snippet = list(dict.fromkeys((r["prompt_id"], r["output"]) for r in high_quality))  # first occurrence, in order
    assert ours == snippet
    assert len(ours) < len(high_quality)  # the data does contain duplicates


def test_pair_agrees_with_the_dpo_snippet_except_that_tied_groups_give_no_pair(rollout_file, tmp_path):
    rollouts = read_jsonl(rollout_file)
    snippet_pairs = {prompt_key(p["prompt"]): p for p in run_snippet(DPO_SNIPPET, rollouts)["pairs"]}
    tied = {
        prompt_key(g[0]["input"])
        for g in (list(g) for _, g in groupby(rollouts, key=lambda r: r["prompt_id"]))
        if len(g) >= 2 and len({r["reward"] for r in g}) == 1
    }

    run_pair(rollout_file, tmp_path / "pairs.jsonl", pair_config(min_margin=0.0))
    ours = {prompt_key(p["prompt"]): p for p in read_jsonl(tmp_path / "pairs.jsonl")}

    assert tied and tied <= snippet_pairs.keys()  # the snippet pairs tied groups (chosen ~ rejected)...
    assert not tied & ours.keys()  # ...we skip them by design
    assert ours.keys() == snippet_pairs.keys() - tied  # every other prompt: same pairs
    for key, pair in ours.items():
        assert pair["chosen"] == [{"role": "assistant", "content": snippet_pairs[key]["chosen"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": snippet_pairs[key]["rejected"]}]
    first = ours[prompt_key(rollouts[0]["input"])]
    assert (first["chosen"][0]["content"], first["rejected"][0]["content"]) == ("best0", "worst3")
