"""filter: rollouts -> SFT records, keeping reward >= min_reward, an optional jq `where`, no duplicate outputs; written
as TRL's conversational `messages` (the default) or `prompt_completion` records."""

from __future__ import annotations

import subprocess
import typing

import pytest

from rollout_pipeline.errors import UserError
from rollout_pipeline.params import Filter, load_params
from rollout_pipeline.stages.sft_filter import FORMATS, FilterSummary, filter_rollouts, run_filter
from stage_testkit import (
    filter_config,
    group,
    groups,
    make_rollout,
    run_script,
    stage_params,
    with_reasoning,
    write_rollouts,
)
from support import PY, SCRIPTS, read_jsonl


def kept_outputs(path, **config) -> list[tuple[str, str]]:
    summary = FilterSummary()
    return [
        (r["prompt_id"], r["messages"][-1]["content"]) for r in filter_rollouts(path, filter_config(**config), summary)
    ]


def test_writes_the_conversation_with_the_output_as_the_assistant_turn(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl", [make_rollout("p0", 0, 0, 1.0, "It is \\boxed{3}", question="1 + 2?")]
    )
    run_filter(source, tmp_path / "sft.jsonl", filter_config())
    assert read_jsonl(tmp_path / "sft.jsonl") == [
        {
            "messages": [
                {"role": "system", "content": "Answer with a number in \\boxed{}."},
                {"role": "user", "content": "1 + 2?"},
                {"role": "assistant", "content": "It is \\boxed{3}"},
            ],
            "prompt_id": "p0",
            "reward": 1.0,
        }
    ]


def test_keeps_rewards_at_or_above_min_reward(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(0.8, "at"), (0.79, "below"), (1.0, "above"), (0.0, "zero")]))
    assert kept_outputs(source, min_reward=0.8) == [("p0", "at"), ("p0", "above")]
    assert kept_outputs(source, min_reward=0.0) == [("p0", "at"), ("p0", "below"), ("p0", "above"), ("p0", "zero")]


def test_drops_exact_duplicate_outputs_of_the_same_prompt_only(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        groups(
            [(1.0, "42"), (1.0, "42"), (1.0, "42 "), (0.9, "42")],  # "42 " differs: exact comparison, no normalizing
            [(1.0, "42")],  # same text, other prompt: kept
        ),
    )
    assert kept_outputs(source) == [("p0", "42"), ("p0", "42 "), ("p1", "42")]
    assert kept_outputs(source, dedupe=False) == [("p0", "42"), ("p0", "42"), ("p0", "42 "), ("p0", "42"), ("p1", "42")]


def test_a_duplicate_of_a_dropped_rollout_is_kept(tmp_path):
    # Dedupe compares against kept outputs: the first "x" fails min_reward, so the second is the first kept "x".
    source = write_rollouts(tmp_path / "r.jsonl", groups([(0.1, "x"), (1.0, "x")]))
    assert kept_outputs(source) == [("p0", "x")]


def test_where_is_a_jq_expression_whose_first_output_must_be_truthy(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        [
            *group("p0", 0, [(1.0, "short")], output_tokens=3, extracted_answer="3"),
            *group("p1", 1, [(1.0, "long")], output_tokens=300, extracted_answer="4"),
            *group("p2", 2, [(1.0, "no answer")], extracted_answer=None),
        ],
    )
    assert kept_outputs(source, where=".response.usage.output_tokens < 200") == [("p0", "short"), ("p2", "no answer")]
    # jq truthiness: null and false reject, everything else (0, "", []) accepts; no output at all rejects.
    assert kept_outputs(source, where=".extracted_answer") == [("p0", "short"), ("p1", "long")]
    assert kept_outputs(source, where="0") == [("p0", "short"), ("p1", "long"), ("p2", "no answer")]
    assert kept_outputs(source, where='select(.prompt_id == "p1")') == [("p1", "long")]
    assert kept_outputs(source, where="empty") == []


def test_summary_counts_every_drop_under_its_first_reason(tmp_path):
    source = write_rollouts(
        tmp_path / "r.jsonl",
        groups(
            [(1.0, "a"), (1.0, "a"), (0.5, "a"), (1.0, "b")],
            [(0.0, "c"), (0.2, "d")],
            [(1.0, "e")],
        ),
    )
    config = filter_config(where='.output != "b"')
    summary = run_filter(source, tmp_path / "sft.jsonl", config)
    assert (summary.rollouts, summary.prompts, summary.kept, summary.kept_prompts) == (7, 3, 2, 2)
    assert dict(summary.dropped) == {"duplicate": 1, "below_min_reward": 3, "rejected_by_where": 1}
    assert summary.lines(config, "sft.jsonl") == [
        "kept 2 of 7 rollouts (2 of 3 prompts) -> sft.jsonl (messages records)",
        "dropped 5: 3 below min_reward 0.8, 1 rejected by where, 1 duplicate outputs",
    ]


def test_an_invalid_where_fails_before_reading_naming_the_setting(tmp_path):
    with pytest.raises(UserError) as error:
        run_filter(tmp_path / "missing.jsonl", tmp_path / "sft.jsonl", filter_config(where=".reward >"))
    assert str(error.value).startswith("filter.where: invalid jq expression '.reward >': syntax error")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "sft.jsonl").exists()


def test_a_where_that_errors_on_a_record_names_the_line_and_the_fix(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a")], [(1.0, "b")]))
    with pytest.raises(
        UserError, match=r"r\.jsonl:1: filter\.where '\.output\.x' failed on this record .*'\?' or '//'"
    ):
        run_filter(source, tmp_path / "sft.jsonl", filter_config(where=".output.x"))


def test_the_script_reads_params_prints_the_summary_and_flags_override(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (1.0, "a"), (0.5, "b")], [(0.9, "c")]))
    params = stage_params(tmp_path, filter={"min_reward": 0.95})
    out = tmp_path / "sft" / "train.jsonl"

    result = run_script("filter", "--in", source, "--out", out, "--params", params)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"kept 1 of 4 rollouts (1 of 2 prompts) -> {out} (messages records)",
        "dropped 3: 2 below min_reward 0.95, 0 rejected by where, 1 duplicate outputs",
    ]
    assert [r["messages"][-1]["content"] for r in read_jsonl(out)] == ["a"]

    result = run_script(
        "filter",
        "--in",
        source,
        "--out",
        out,
        "--params",
        params,
        "--min-reward",
        "0",
        "--no-dedupe",
        "--where",
        '.prompt_id == "p0"',
        "--format",
        "prompt_completion",
    )
    assert (
        result.stdout.splitlines()[0] == f"kept 3 of 4 rollouts (1 of 2 prompts) -> {out} (prompt_completion records)"
    )
    assert [r["completion"][0]["content"] for r in read_jsonl(out)] == ["a", "a", "b"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", ".reward >"], "filter: error: --where: invalid jq expression '.reward >'"),
        (["--in", "{tmp}/empty.jsonl"], "filter: error: {tmp}/empty.jsonl: no rollouts; did collect run?"),
        (["--in", "{tmp}/bad.jsonl"], "filter: error: {tmp}/bad.jsonl:2: 'reward' must be a number, got 'high'"),
    ],
)
def test_the_script_exits_2_with_one_line_on_bad_input(tmp_path, args, message):
    write_rollouts(tmp_path / "empty.jsonl", [])
    write_rollouts(tmp_path / "bad.jsonl", [make_rollout("p0", 0, 0, 1.0, "a"), make_rollout("p0", 0, 1, "high", "b")])
    params = stage_params(tmp_path)
    args = [a.format(tmp=tmp_path) for a in args]
    result = run_script(
        "filter", "--in", tmp_path / "bad.jsonl", "--out", tmp_path / "o.jsonl", "--params", params, *args
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(message.format(tmp=tmp_path))


def test_the_script_rejects_an_unknown_params_key_with_a_suggestion(tmp_path):
    params = stage_params(tmp_path, filter={"min_rewrd": 0.5})
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a")]))
    result = run_script("filter", "--in", source, "--out", tmp_path / "o.jsonl", "--params", params)
    assert result.returncode == 2
    assert "filter.min_rewrd: unknown key (did you mean 'min_reward'?)" in result.stderr


def test_the_models_reasoning_becomes_the_assistants_reasoning_content_unless_switched_off(tmp_path):
    rollout = with_reasoning(make_rollout("p0", 0, 0, 1.0, "\\boxed{3}", question="1 + 2?"), "1 plus 2 is 3.")
    source = write_rollouts(tmp_path / "r.jsonl", [rollout])
    run_filter(source, tmp_path / "sft.jsonl", filter_config())
    assert read_jsonl(tmp_path / "sft.jsonl")[0]["messages"][-1] == {
        "role": "assistant",
        "content": "\\boxed{3}",
        "reasoning_content": "1 plus 2 is 3.",
    }
    run_filter(source, tmp_path / "plain.jsonl", filter_config(keep_reasoning=False))
    assert read_jsonl(tmp_path / "plain.jsonl")[0]["messages"][-1] == {"role": "assistant", "content": "\\boxed{3}"}


def test_prompt_completion_splits_the_conversation_into_the_input_and_the_assistant_turn(tmp_path):
    rollout = with_reasoning(make_rollout("p0", 0, 0, 1.0, "\\boxed{3}", question="1 + 2?"), "1 plus 2 is 3.")
    source = write_rollouts(tmp_path / "r.jsonl", [rollout])
    run_filter(source, tmp_path / "sft.jsonl", filter_config(format="prompt_completion"))
    assert read_jsonl(tmp_path / "sft.jsonl") == [
        {
            "prompt": [
                {"role": "system", "content": "Answer with a number in \\boxed{}."},
                {"role": "user", "content": "1 + 2?"},
            ],
            "completion": [{"role": "assistant", "content": "\\boxed{3}", "reasoning_content": "1 plus 2 is 3."}],
            "prompt_id": "p0",
            "reward": 1.0,
        }
    ]
    # The same conversation as the messages format: prompt + completion == messages.
    run_filter(source, tmp_path / "messages.jsonl", filter_config())
    record = read_jsonl(tmp_path / "sft.jsonl")[0]
    assert record["prompt"] + record["completion"] == read_jsonl(tmp_path / "messages.jsonl")[0]["messages"]


def test_the_format_keeps_and_drops_the_same_rollouts(tmp_path):
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a"), (1.0, "a"), (0.5, "b")], [(0.9, "c")]))
    as_messages = [
        (r["prompt_id"], r["messages"][-1]["content"])
        for r in filter_rollouts(source, filter_config(), FilterSummary())
    ]
    as_completions = [
        (r["prompt_id"], r["completion"][-1]["content"])
        for r in filter_rollouts(source, filter_config(format="prompt_completion"), FilterSummary())
    ]
    assert as_messages == as_completions == [("p0", "a"), ("p1", "c")]


def test_params_offer_exactly_the_formats_the_stage_writes(tmp_path):
    assert typing.get_args(Filter.model_fields["format"].annotation) == FORMATS
    params = stage_params(tmp_path, filter={"format": "prompt_complete"})
    source = write_rollouts(tmp_path / "r.jsonl", groups([(1.0, "a")]))
    result = run_script("filter", "--in", source, "--out", tmp_path / "o.jsonl", "--params", params)
    assert result.returncode == 2
    assert (
        "filter.format: 'prompt_complete' is not one of messages, prompt_completion (did you mean 'prompt_completion'?)"
    ) in result.stderr


def _filter_in(directory, params) -> subprocess.CompletedProcess:
    """`scripts/filter.py` with no --in, run in `directory` (where data/rollouts/ is)."""
    return subprocess.run(
        [PY, str(SCRIPTS / "filter.py"), "--params", params, "--out", "sft.jsonl"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_filter_reads_the_rollouts_of_the_objective_filter_objective_names(tmp_path):
    """No --in: the rollouts of filter.objective (here rl, not the default sft), where the score stage writes them."""
    rollouts = tmp_path / "data" / "rollouts"
    rollouts.mkdir(parents=True)
    write_rollouts(rollouts / "rl.jsonl", group("p0", 0, [(0.0, "wrong"), (1.0, "right")]))
    result = _filter_in(tmp_path, stage_params(tmp_path, filter={"objective": "rl"}))
    assert result.returncode == 0, result.stderr
    assert [r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "sft.jsonl")] == ["right"]


def test_filter_objective_left_to_its_default_must_name_an_objective_when_the_stage_runs(tmp_path):
    """A params.yaml for the collector alone need not have an sft objective; the filter stage then says what to set."""
    params = stage_params(tmp_path)  # objectives: rl only
    result = _filter_in(tmp_path, params)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"filter: error: {params}: filter.objective: unknown objective 'sft'; known objectives: rl"
    ]


def test_a_typo_in_filter_objective_is_refused_when_params_yaml_is_read(tmp_path):
    params = stage_params(tmp_path, filter={"objective": "rll"})
    with pytest.raises(UserError) as raised:
        load_params(params)
    assert str(raised.value) == (
        f"{params}: filter.objective: unknown objective 'rll' (did you mean 'rl'?); known objectives: rl"
    )
