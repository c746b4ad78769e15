"""pair: per prompt, the highest-reward rollout (chosen) against the lowest (rejected), TRL's preference format."""
from __future__ import annotations

from stage_testkit import group, groups, make_rollout, run_script, stage_params, write_rollouts
from support import read_jsonl

from rollout_pipeline.stages.dpo_pairs import PairConfig, PairSummary, pair_rollouts, run_pair


def pairs_of(path, **config) -> list[tuple[str, str, str]]:
    summary = PairSummary()
    return [(r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"])
            for r in pair_rollouts(path, PairConfig(**config), summary)]


def test_writes_trl_conversational_preference_records(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", group("p0", 0, [(0.0, "wrong"), (1.0, "right")], question="1 + 2?"))
    run_pair(source, tmp_path / "pairs.jsonl", PairConfig())
    assert read_jsonl(tmp_path / "pairs.jsonl") == [{
        "prompt": [{"role": "system", "content": "Answer with a number in \\boxed{}."}, {"role": "user", "content": "1 + 2?"}],
        "chosen": [{"role": "assistant", "content": "right"}],
        "rejected": [{"role": "assistant", "content": "wrong"}],
        "prompt_id": "p0",
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "margin": 1.0,
    }]


def test_chosen_is_the_highest_reward_and_rejected_the_lowest(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(0.5, "mid"), (0.0, "low"), (1.0, "high"), (0.7, "mid2")]))
    assert pairs_of(source) == [("p0", "high", "low")]


def test_ties_pick_the_first_best_and_the_last_worst_by_rollout_index(tmp_path):
    # As the seed's stable `sorted(..., reverse=True)` does: [0]=first of the top, [-1]=last of the bottom.
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "best0"), (0.0, "worst1"), (1.0, "best2"), (0.0, "worst3")]))
    assert pairs_of(source) == [("p0", "best0", "worst3")]


def test_no_pair_for_a_single_rollout_all_tied_rewards_or_a_small_margin(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(
        [(1.0, "alone")],                          # single rollout
        [(1.0, "a"), (1.0, "b"), (1.0, "c")],      # all tied (all correct)
        [(0.0, "a"), (0.0, "b")],                  # all tied (all wrong)
        [(0.75, "a"), (0.5, "b")],                 # margin 0.25
        [(1.0, "a"), (0.5, "b")],                  # margin 0.5: exactly min_margin, kept
        [(1.0, "a"), (0.0, "b")],                  # margin 1.0
    ))
    summary = run_pair(source, tmp_path / "pairs.jsonl", PairConfig(min_margin=0.5))
    assert [(r["prompt_id"], r["margin"]) for r in read_jsonl(tmp_path / "pairs.jsonl")] == [("p4", 0.5), ("p5", 1.0)]
    assert (summary.prompts, summary.rollouts, summary.pairs) == (6, 12, 2)
    assert dict(summary.skipped) == {"single_rollout": 1, "all_tied": 2, "below_min_margin": 1}
    assert summary.lines(PairConfig(min_margin=0.5), "pairs.jsonl") == [
        "wrote 2 pairs from 6 prompts (12 rollouts) -> pairs.jsonl",
        "skipped 4 prompts: 2 all rewards tied, 1 single rollout, 1 margin below min_margin 0.5",
    ]
    # With the default min_margin 0, any difference in reward makes a pair.
    assert [p for p, _, _ in pairs_of(source)] == ["p3", "p4", "p5"]


def test_the_script_reads_params_and_prints_the_summary(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (0.0, "b")], [(1.0, "c"), (1.0, "d")], [(0.9, "e"), (1.0, "f")]))
    params = stage_params(tmp_path, pair={"min_margin": 0.5})
    out = tmp_path / "dpo" / "pairs.jsonl"
    result = run_script("pair", "--in", source, "--out", out, "--params", params)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote 1 pairs from 3 prompts (6 rollouts) -> {out}",
        "skipped 2 prompts: 1 all rewards tied, 0 single rollout, 1 margin below min_margin 0.5",
    ]
    result = run_script("pair", "--in", source, "--out", out, "--params", params, "--min-margin", "0")
    assert result.stdout.splitlines()[0] == f"wrote 2 pairs from 3 prompts (6 rollouts) -> {out}"


def test_the_script_exits_2_with_one_line_when_records_are_not_sorted(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", [make_rollout("p0", 0, 0, 1.0, "a"), make_rollout("p1", 1, 0, 1.0, "b"),
                                                   make_rollout("p0", 0, 1, 0.0, "c")])
    result = run_script("pair", "--in", source, "--out", tmp_path / "pairs.jsonl", "--params", stage_params(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"pair: error: {source}:3: task_index 0 comes after 1")
    assert not (tmp_path / "pairs.jsonl").exists()
