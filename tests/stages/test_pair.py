"""pair: per prompt, the highest-reward rollout (chosen) against the lowest (rejected), TRL's preference format; more
pairs per prompt with `pairs_per_prompt`, picked best vs worst or as all pairs above the margin."""

from __future__ import annotations

import subprocess
import typing

from rollout_pipeline.params import Pair
from rollout_pipeline.stages.dpo_pairs import STRATEGIES, PairSummary, pair_rollouts, run_pair
from stage_testkit import group, groups, make_rollout, pair_config, run_script, stage_params, write_rollouts
from support import PY, SCRIPTS, read_jsonl


def pairs_of(path, **config) -> list[tuple[str, str, str]]:
    summary = PairSummary()
    return [
        (r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in pair_rollouts(path, pair_config(**config), summary)
    ]


def test_writes_trl_conversational_preference_records(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", group("p0", 0, [(0.0, "wrong"), (1.0, "right")], question="1 + 2?"))
    run_pair(source, tmp_path / "pairs.jsonl", pair_config())
    assert read_jsonl(tmp_path / "pairs.jsonl") == [
        {
            "prompt": [
                {"role": "system", "content": "Answer with a number in \\boxed{}."},
                {"role": "user", "content": "1 + 2?"},
            ],
            "chosen": [{"role": "assistant", "content": "right"}],
            "rejected": [{"role": "assistant", "content": "wrong"}],
            "prompt_id": "p0",
            "chosen_reward": 1.0,
            "rejected_reward": 0.0,
            "margin": 1.0,
        }
    ]


def test_chosen_is_the_highest_reward_and_rejected_the_lowest(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(0.5, "mid"), (0.0, "low"), (1.0, "high"), (0.7, "mid2")]))
    assert pairs_of(source) == [("p0", "high", "low")]


def test_ties_pick_the_first_best_and_the_last_worst_by_rollout_index(tmp_path):
    # As the seed's stable `sorted(..., reverse=True)` does: [0]=first of the top, [-1]=last of the bottom.
    source = write_rollouts(
        tmp_path / "r.jsonl", groups([(1.0, "best0"), (0.0, "worst1"), (1.0, "best2"), (0.0, "worst3")])
    )
    assert pairs_of(source) == [("p0", "best0", "worst3")]


def test_no_pair_for_a_single_rollout_all_tied_rewards_or_a_small_margin(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        groups(
            [(1.0, "alone")],  # single rollout
            [(1.0, "a"), (1.0, "b"), (1.0, "c")],  # all tied (all correct)
            [(0.0, "a"), (0.0, "b")],  # all tied (all wrong)
            [(0.75, "a"), (0.5, "b")],  # margin 0.25
            [(1.0, "a"), (0.5, "b")],  # margin 0.5: exactly min_margin, kept
            [(1.0, "a"), (0.0, "b")],  # margin 1.0
        ),
    )
    summary = run_pair(source, tmp_path / "pairs.jsonl", pair_config(min_margin=0.5))
    assert [(r["prompt_id"], r["margin"]) for r in read_jsonl(tmp_path / "pairs.jsonl")] == [("p4", 0.5), ("p5", 1.0)]
    assert (summary.prompts, summary.rollouts, summary.pairs) == (6, 12, 2)
    assert dict(summary.skipped) == {"single_rollout": 1, "all_tied": 2, "below_min_margin": 1}
    assert summary.lines(pair_config(min_margin=0.5), "pairs.jsonl") == [
        "wrote 2 pairs from 6 prompts (12 rollouts) -> pairs.jsonl",
        "skipped 4 prompts: 2 all rewards tied, 1 single rollout, 1 margin below min_margin 0.5",
        "best_vs_worst, pairs_per_prompt 1: 2 prompts paired, 1.00 pairs per paired prompt, mean margin 0.75, "
        "0 more pairs passed the margin but were over the cap",
    ]
    # With the default min_margin 0, any difference in reward makes a pair.
    assert [p for p, _, _ in pairs_of(source)] == ["p3", "p4", "p5"]


def test_the_script_reads_params_and_prints_the_summary(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl", groups([(1.0, "a"), (0.0, "b")], [(1.0, "c"), (1.0, "d")], [(0.9, "e"), (1.0, "f")])
    )
    params = stage_params(tmp_path, pair={"min_margin": 0.5})
    out = tmp_path / "dpo" / "pairs.jsonl"
    result = run_script("pair", "--in", source, "--out", out, "--params", params)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote 1 pairs from 3 prompts (6 rollouts) -> {out}",
        "skipped 2 prompts: 1 all rewards tied, 0 single rollout, 1 margin below min_margin 0.5",
        "best_vs_worst, pairs_per_prompt 1: 1 prompts paired, 1.00 pairs per paired prompt, mean margin 1, "
        "0 more pairs passed the margin but were over the cap",
    ]
    result = run_script("pair", "--in", source, "--out", out, "--params", params, "--min-margin", "0")
    assert result.stdout.splitlines()[0] == f"wrote 2 pairs from 3 prompts (6 rollouts) -> {out}"


def test_the_script_exits_2_with_one_line_when_records_are_not_sorted(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        [make_rollout("p0", 0, 0, 1.0, "a"), make_rollout("p1", 1, 0, 1.0, "b"), make_rollout("p0", 0, 1, 0.0, "c")],
    )
    result = run_script("pair", "--in", source, "--out", tmp_path / "pairs.jsonl", "--params", stage_params(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"pair: error: {source}:3: task_index 0 comes after 1")
    assert not (tmp_path / "pairs.jsonl").exists()


# Rewards of one prompt's rollouts, in rollout_index order; outputs name them: "r<index>=<reward>".
GRADED = [(0.5, "r0=.5"), (1.0, "r1=1"), (0.0, "r2=0"), (1.0, "r3=1"), (0.25, "r4=.25"), (0.0, "r5=0")]


def chosen_and_rejected(path, **config) -> list[tuple[str, str]]:
    return [(chosen, rejected) for _, chosen, rejected in pairs_of(path, **config)]


def test_best_vs_worst_pairs_the_ith_best_with_the_ith_worst_each_rollout_once(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED))
    # Best first: r1, r3 (1.0, file order), r0, r4, r2, r5; worst first is that reversed: r5, r2, r4, r0, r3, r1.
    assert chosen_and_rejected(source, pairs_per_prompt=2) == [("r1=1", "r5=0"), ("r3=1", "r2=0")]
    # The third pair is r0 (0.5) against r4 (0.25); a fourth would pair r4 with r0 again, the wrong way round.
    assert chosen_and_rejected(source, pairs_per_prompt=None) == [
        ("r1=1", "r5=0"),
        ("r3=1", "r2=0"),
        ("r0=.5", "r4=.25"),
    ]
    # Margins only shrink with each pair, so the first pair below min_margin ends the prompt's pairs.
    assert chosen_and_rejected(source, pairs_per_prompt=None, min_margin=0.5) == [("r1=1", "r5=0"), ("r3=1", "r2=0")]


def test_best_vs_worst_with_binary_rewards_makes_as_many_pairs_as_the_smaller_side(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        groups(
            [(1.0, "ok0"), (1.0, "ok1"), (1.0, "ok2"), (0.0, "bad3")],
            [(0.0, "bad0"), (1.0, "ok1"), (0.0, "bad2"), (1.0, "ok3")],
        ),
    )
    assert pairs_of(source, pairs_per_prompt=4) == [("p0", "ok0", "bad3"), ("p1", "ok1", "bad2"), ("p1", "ok3", "bad0")]


def test_all_pairs_writes_every_pair_above_the_margin_largest_margin_first(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED))
    pairs = chosen_and_rejected(source, strategy="all_pairs", pairs_per_prompt=None, min_margin=0.5)
    # Margin 1: each best (r1, r3 in file order) against each worst (r5, r2: the later one first, as best_vs_worst
    # does); then margin 0.75 (the bests against r4), then 0.5 (the bests against r0, r0 against the worsts).
    assert pairs == [
        ("r1=1", "r5=0"),
        ("r1=1", "r2=0"),
        ("r3=1", "r5=0"),
        ("r3=1", "r2=0"),
        ("r1=1", "r4=.25"),
        ("r3=1", "r4=.25"),
        ("r1=1", "r0=.5"),
        ("r3=1", "r0=.5"),
        ("r0=.5", "r5=0"),
        ("r0=.5", "r2=0"),
    ]
    # Every rewarded difference with min_margin 0: 2*4 + 1*3 + 1*2 = 13 pairs (r0 > r4 > r2, r5); the cap keeps the first.
    assert len(pairs_of(source, strategy="all_pairs", pairs_per_prompt=None)) == 13
    assert chosen_and_rejected(source, strategy="all_pairs", pairs_per_prompt=3) == pairs[:3]


def test_at_one_pair_per_prompt_both_strategies_write_todays_best_against_worst_pair(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", [*group("p0", 0, GRADED), *group("p1", 1, [(1.0, "a"), (0.0, "b")])])
    best_vs_worst = pair_rollouts(source, pair_config(), PairSummary())
    assert list(best_vs_worst) == list(pair_rollouts(source, pair_config(strategy="all_pairs"), PairSummary()))
    assert pairs_of(source) == [("p0", "r1=1", "r5=0"), ("p1", "a", "b")]


def test_the_summary_says_how_many_more_pairs_the_cap_left_out(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED, [(1.0, "a"), (0.0, "b")], [(1.0, "c"), (1.0, "d")]))
    config = pair_config(strategy="all_pairs", pairs_per_prompt=2)
    summary = run_pair(source, tmp_path / "pairs.jsonl", config)
    assert (summary.pairs, summary.paired_prompts, summary.over_cap) == (3, 2, 11)
    assert summary.lines(config, "pairs.jsonl")[2] == (
        "all_pairs, pairs_per_prompt 2: 2 prompts paired, 1.50 pairs per paired prompt, mean margin 1, "
        "11 more pairs passed the margin but were over the cap"
    )
    assert summary.lines(pair_config(pairs_per_prompt=None), "pairs.jsonl")[2].startswith("best_vs_worst, no cap: ")


def test_the_script_takes_the_strategy_and_the_cap_from_params_and_flags(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED))
    params = stage_params(tmp_path, pair={"strategy": "all_pairs", "pairs_per_prompt": None})
    out = tmp_path / "pairs.jsonl"
    assert run_script("pair", "--in", source, "--out", out, "--params", params).returncode == 0
    assert len(read_jsonl(out)) == 13
    result = run_script(
        "pair",
        "--in",
        source,
        "--out",
        out,
        "--params",
        params,
        "--pairs-per-prompt",
        "2",
        "--strategy",
        "best_vs_worst",
    )
    assert result.returncode == 0, result.stderr
    assert [r["chosen"][0]["content"] for r in read_jsonl(out)] == ["r1=1", "r3=1"]
    result = run_script("pair", "--in", source, "--out", out, "--params", params, "--pairs-per-prompt", "0")
    assert (result.returncode, result.stderr) == (
        2,
        "pair: error: --pairs-per-prompt: 0 is out of range; it must be >= 1\n",
    )


def test_a_flag_is_validated_as_the_params_key_it_overrides_and_the_error_names_the_flag(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED))
    params = stage_params(tmp_path)
    out = tmp_path / "pairs.jsonl"
    result = run_script("pair", "--in", source, "--out", out, "--params", params, "--min-margin", "-1")
    assert (result.returncode, result.stderr) == (
        2,
        "pair: error: --min-margin: -1.0 is out of range; it must be >= 0.0\n",
    )
    assert not out.exists()


def test_params_offer_exactly_the_strategies_the_stage_has_and_check_the_cap(tmp_path):
    assert typing.get_args(Pair.model_fields["strategy"].annotation) == STRATEGIES
    source = write_rollouts(tmp_path / "r.jsonl", groups(GRADED))
    for section, message in [
        ({"strategy": "all"}, "pair.strategy: 'all' is not one of best_vs_worst, all_pairs"),
        ({"pairs_per_prompt": 0}, "pair.pairs_per_prompt: 0 is out of range; it must be >= 1"),
    ]:
        params = stage_params(tmp_path, pair=section)
        result = run_script("pair", "--in", source, "--out", tmp_path / "o.jsonl", "--params", params)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_pair_reads_the_rollouts_of_the_objective_pair_objective_names(tmp_path):
    """No --in: the rollouts of pair.objective (here rl, not the default dpo), where the score stage writes them."""
    rollouts = tmp_path / "data" / "rollouts"
    rollouts.mkdir(parents=True)
    write_rollouts(rollouts / "rl.jsonl", group("p0", 0, [(0.0, "wrong"), (1.0, "right")]))
    params = stage_params(tmp_path, pair={"objective": "rl"})
    result = subprocess.run(
        [PY, str(SCRIPTS / "pair.py"), "--params", params, "--out", "pairs.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [(r["prompt_id"], r["chosen"][0]["content"]) for r in read_jsonl(tmp_path / "pairs.jsonl")] == [
        ("p0", "right")
    ]


def test_a_typo_in_pair_objective_names_it_and_the_known_objectives(tmp_path):
    params = tmp_path / "params.yaml"
    stage_params(tmp_path)
    params.write_text(params.read_text() + "pair:\n  objective: rll\n")
    result = run_script("pair", "--params", params, "--out", tmp_path / "pairs.jsonl")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"pair: error: {params}: pair.objective: unknown objective 'rll' (did you mean 'rl'?); known objectives: rl"
    ]
