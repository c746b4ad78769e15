"""The seed command line is Hydra's override grammar, read by Hydra's own parser, as `ng_collect_rollouts` users type it."""

from __future__ import annotations

import pytest

from rollout_pipeline.cli.seed_args import parse_seed_args
from rollout_pipeline.errors import UserError
from support import agent, collect, make_prompts, read_jsonl, seed_args, write_params

REQUIRED = ["+agent_name=math_agent", "+input_jsonl_fpath=in.jsonl", "+output_jsonl_fpath=out.jsonl"]


def test_plus_plus_plus_and_bare_keys_all_set_a_value_with_hydra_types():
    run, fetch = parse_seed_args(
        [*REQUIRED, "++num_repeats=4", "limit=10", "+seed=7", "+responses_create_params.temperature=0.7"]
    )
    assert (run["num_repeats"], run["limit"], run["seed"]) == (4, 10, 7)
    assert run["responses_create_params"]["temperature"] == 0.7
    assert fetch == {}


def test_nested_keys_and_lists_pass_through_to_the_server_under_responses_create_params():
    run, _ = parse_seed_args(
        [*REQUIRED, "+responses_create_params.reasoning.effort=high", "+responses_create_params.stop=[END,'### ']"]
    )
    assert run["responses_create_params"]["reasoning"] == {"effort": "high"}
    assert run["responses_create_params"]["stop"] == ["END", "### "]


def test_fetch_keys_on_the_command_line_override_params_for_this_run_only():
    _, fetch = parse_seed_args([*REQUIRED, "+num_samples_in_parallel=8", "+timeout_s=30", "+max_failure_rate=0.1"])
    assert fetch == {"num_samples_in_parallel": 8, "timeout_s": 30.0, "max_failure_rate": 0.1}


def test_config_paths_are_merged_in_order_and_the_command_line_wins_with_plus_plus(tmp_path):
    (tmp_path / "base.yaml").write_text("num_repeats: 2\nseed: 1\nresponses_create_params: {temperature: 0.2}\n")
    (tmp_path / "more.yaml").write_text(
        "seed: 5\n# a NeMo Gym server definition is skipped: params.yaml's agents "
        "replace it\nmath_with_judge:\n  resources_servers: {math: {}}\n"
    )
    run, _ = parse_seed_args(
        [
            f"+config_paths=[{tmp_path / 'base.yaml'},{tmp_path / 'more.yaml'}]",
            *REQUIRED,
            "++num_repeats=6",
            "+responses_create_params.top_p=0.9",
        ]
    )
    assert (run["num_repeats"], run["seed"]) == (6, 5)
    assert run["responses_create_params"] == {"temperature": 0.2, "top_p": 0.9, "max_output_tokens": None}


def test_plus_on_a_key_a_config_file_already_set_asks_for_plus_plus_as_hydra_does(tmp_path):
    (tmp_path / "run.yaml").write_text("num_repeats: 2\n")
    with pytest.raises(
        UserError, match=r"num_repeats is already set by .*run.yaml; use \+\+num_repeats=\.\.\. to override it"
    ):
        parse_seed_args([f"+config_paths=[{tmp_path / 'run.yaml'}]", *REQUIRED, "+num_repeats=4"])


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*REQUIRED, "+num_repeat=4"], "+num_repeat: unknown key (did you mean 'num_repeats'?)"),
        ([*REQUIRED, "+num_repeats=0"], "+num_repeats: 0 is out of range; it must be >= 1"),
        ([*REQUIRED, "+num_repeats=four"], "+num_repeats: expected an integer, got 'four'"),
        ([*REQUIRED, "+num_repeats=2,4"], "sweeps and deletions are Hydra multirun features; give one value"),
        ([*REQUIRED, "num_repeats"], "argument 'num_repeats' is not a Hydra override"),
        (REQUIRED[:2], "missing +output_jsonl_fpath=..."),
    ],
)
def test_mistakes_are_one_line_naming_the_argument(argv, message):
    with pytest.raises(UserError) as raised:
        parse_seed_args(argv)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_config_file_with_an_unknown_key_names_the_file_and_suggests(tmp_path):
    (tmp_path / "run.yaml").write_text("num_repeat: 2\n")
    with pytest.raises(UserError, match=r"run.yaml: num_repeat: unknown key \(did you mean 'num_repeats'\?\)"):
        parse_seed_args([f"+config_paths=[{tmp_path / 'run.yaml'}]", *REQUIRED])


def test_without_num_samples_in_parallel_the_seed_syntax_queries_with_the_pool_cap(tmp_path):
    params = write_params(tmp_path, {"math_agent": agent()})
    prompts = make_prompts(tmp_path / "prompts.jsonl", 5, seed=3)
    result = collect([*seed_args(prompts, tmp_path / "out.jsonl"), "++num_repeats=2"], tmp_path, params, check=True)
    assert "Querying with 1024 concurrent requests" in result.stdout
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 10


def test_a_model_revision_puts_the_policy_version_on_every_record_and_a_run_without_one_records_none(tmp_path):
    params = write_params(tmp_path, {"math_agent": agent()})
    prompts = make_prompts(tmp_path / "prompts.jsonl", 3, seed=3)
    collect(
        [*seed_args(prompts, tmp_path / "a.jsonl"), "+num_repeats=2", "--model-revision", "0123abcd"],
        tmp_path,
        params,
        check=True,
    )
    assert [r["policy_version"] for r in read_jsonl(tmp_path / "a.jsonl")] == [
        {"model": "reference", "checkpoint": "0123abcd"}
    ] * 6
    collect([*seed_args(prompts, tmp_path / "b.jsonl"), "+num_repeats=2"], tmp_path, params, check=True)
    assert all("policy_version" not in r for r in read_jsonl(tmp_path / "b.jsonl"))
