"""Our collector against the real NeMo Gym 0.7.0 stack, beside Gym's own collector on the same rows.

Both collectors reach an agent the same way (its environment server's /run) and both are typed the same way
(`gym eval run -a AGENT -i IN -o OUT --num-repeats N`): Gym's from .venv-gym, ours from the project's venv.
"""

from __future__ import annotations

import orjson
from gym_runs import our_params, read, run_gyms, run_ours, write_rows

SUMS = [(17, 25), (38, 46), (7, 8), (59, 64), (123, 9), (44, 44), (71, 29), (5, 96), (88, 13), (250, 250)]


def _by_rollout(records: list[dict], task: str, rollout: str) -> dict[tuple[int, int], dict]:
    return {(r[task], r[rollout]): r for r in records}


def _message(record: dict) -> dict:
    return record["response"]["output"][-1]


def _text(record: dict) -> str:
    return "".join(part["text"] for part in _message(record)["content"] if part.get("type") == "output_text")


def _failures(path) -> list[dict]:
    return read(path) if path.exists() else []


def test_a_clean_run_agrees_with_gyms_own_collector_field_by_field_rewards_responses_and_token_ids(stack, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", SUMS, wrong={2, 5})
    ours = run_ours(
        tmp_path, our_params(tmp_path, stack), "math_agent", rows, tmp_path / "ours.jsonl", "--num-repeats", "2"
    )
    assert ours.returncode == 0, ours.stderr
    run_gyms(stack, tmp_path, "math_agent", rows, tmp_path / "gym.jsonl", "--num-repeats", "2")

    mine = _by_rollout(read(tmp_path / "ours.jsonl"), "task_index", "rollout_index")
    gyms = _by_rollout(read(tmp_path / "gym.jsonl"), "_ng_task_index", "_ng_rollout_index")
    assert sorted(mine) == sorted(gyms) and len(mine) == 2 * len(SUMS)
    for key, record in mine.items():
        theirs = gyms[key]
        assert record["reward"] == theirs["reward"], key
        assert record["extracted_answer"] == theirs["extracted_answer"], key
        assert record["output"] == _text(theirs) == _text(record), key
        for field in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
            assert _message(record)[field] == _message(theirs)[field], (key, field)
    rewards = {r["reward"] for r in mine.values()}
    assert rewards == {0.0, 1.0}, "both verdicts occur, so agreeing on them means something"
    assert all(_message(r)["generation_token_ids"] for r in mine.values()), "token ids were on"


def test_masked_rows_never_fail_our_run_and_never_reach_the_rollout_file(stack, tmp_path):
    # masking_agent's resources server asks a judge about every answer math-verify rejects; the judge is down, so
    # Gym's judge failsafe masks exactly those rows (mask_sample, failure_kind judge_failed). Rows 1, 4 and 7
    # expect a wrong answer: they are always rejected, so always masked.
    rows = write_rows(tmp_path / "rows.jsonl", SUMS, wrong={1, 4, 7})
    params = our_params(tmp_path, stack)  # max_failure_rate 0, the default: one failure would fail the run
    ours = run_ours(tmp_path, params, "masking_agent", rows, tmp_path / "ours.jsonl", "--num-repeats", "2")
    assert ours.returncode == 0, ours.stderr
    run_gyms(stack, tmp_path, "masking_agent", rows, tmp_path / "gym.jsonl", "--num-repeats", "2")

    # Gym 0.7.0 keeps a masked row out of its main file: it goes to the `<output>_failures.jsonl` sidecar.
    gyms = _by_rollout(read(tmp_path / "gym.jsonl"), "_ng_task_index", "_ng_rollout_index")
    sidecar = _by_rollout(read(tmp_path / "gym_failures.jsonl"), "_ng_task_index", "_ng_rollout_index")
    masked_by_gym = {key for key, r in sidecar.items() if r.get("mask_sample")}
    assert {(task, rollout) for task in (1, 4, 7) for rollout in (0, 1)} <= masked_by_gym
    assert all(sidecar[key]["failure_kind"] == "judge_failed" for key in masked_by_gym)
    assert not any(r.get("mask_sample") for r in gyms.values())

    mine = _by_rollout(read(tmp_path / "ours.jsonl"), "task_index", "rollout_index")
    assert set(mine) == set(gyms), "we write exactly Gym's unmasked rows"
    assert all(mine[key]["reward"] == gyms[key]["reward"] for key in mine)
    assert all(not r.get("mask_sample") for r in mine.values())
    entries = _failures(tmp_path / "ours.failures.ndjson")
    masked = {(e["task_index"], e["rollout_index"]) for e in entries if e.get("masked")}
    assert masked == masked_by_gym
    assert all(e["failure_kind"] == "judge_failed" for e in entries if e.get("masked"))
    stats = orjson.loads((tmp_path / "ours.stats.json").read_bytes())
    assert stats["failures"] == 0 and stats["coverage"]["scored"] == len(mine)

    # A second run with --resume sends none of them again: masked is an outcome, not a failure to retry.
    written = (tmp_path / "ours.jsonl").read_bytes()
    again = run_ours(tmp_path, params, "masking_agent", rows, tmp_path / "ours.jsonl", "--num-repeats", "2", "--resume")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and f"(not scored: {len(masked)} masked)" in again.stderr
    assert (tmp_path / "ours.jsonl").read_bytes() == written


def test_transient_run_failures_from_the_real_stack_are_retried_until_every_rollout_is_scored(stack, tmp_path):
    # flaky_agent's model gets cut-off JSON for a third of its calls: Gym's model server fails, the agent's /run
    # answers 500, and our collector asks again.
    rows = write_rows(tmp_path / "rows.jsonl", SUMS)
    params = our_params(tmp_path, stack, max_retries=8)
    ours = run_ours(tmp_path, params, "flaky_agent", rows, tmp_path / "ours.jsonl", "--num-repeats", "2")
    assert ours.returncode == 0, ours.stderr
    assert len(read(tmp_path / "ours.jsonl")) == 2 * len(SUMS)
    stats = orjson.loads((tmp_path / "ours.stats.json").read_bytes())
    assert sum(stats["retries"].values()) > 0, "the flaky model did fail some /run calls"
    assert stats["failures"] == 0


def test_a_sticky_run_failure_fails_the_run_with_each_rollout_named_and_gyms_failure_kind(stack, tmp_path):
    # down_agent's model never answers properly: every /run is a 500 from Gym's agent, asked again and again.
    rows = write_rows(tmp_path / "rows.jsonl", SUMS[:3])
    params = our_params(tmp_path, stack, max_retries=1)
    ours = run_ours(tmp_path, params, "down_agent", rows, tmp_path / "ours.jsonl")
    assert ours.returncode == 1
    assert "3 of 3 rollouts failed" in ours.stderr
    assert not (tmp_path / "ours.jsonl").exists() or not read(tmp_path / "ours.jsonl")
    entries = _failures(tmp_path / "ours.failures.ndjson")
    assert sorted(e["task_index"] for e in entries) == [0, 1, 2]
    assert all(e["cause"] == "http_500" and e["failure_kind"] == "agent_run_error" for e in entries)
    assert all(not e.get("masked") for e in entries)


def test_the_run_indices_reach_gyms_agent_which_returns_its_trajectory_keyed_on_them(stack, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", SUMS[:4])
    ours = run_ours(
        tmp_path, our_params(tmp_path, stack), "math_agent", rows, tmp_path / "ours.jsonl", "--num-repeats", "3"
    )
    assert ours.returncode == 0, ours.stderr
    records = read(tmp_path / "ours.jsonl")
    assert len(records) == 12
    for record in records:
        trajectory = record["ng_trajectory"]
        # simple_agent keys the trajectory on _ng_task_index / _ng_rollout_index ("{task}-{rollout}").
        assert trajectory["rollout_id"] == f"{record['task_index']}-{record['rollout_index']}"
        assert trajectory["task_id"] == str(record["task_index"])


def test_gyms_collector_and_ours_write_the_same_number_of_rollouts_with_limit(stack, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", SUMS)
    flags = ("--num-repeats", "1", "--limit", "3")
    ours = run_ours(tmp_path, our_params(tmp_path, stack), "math_agent", rows, tmp_path / "ours.jsonl", *flags)
    assert ours.returncode == 0, ours.stderr
    run_gyms(stack, tmp_path, "math_agent", rows, tmp_path / "gym.jsonl", *flags)
    assert len(read(tmp_path / "ours.jsonl")) == len(read(tmp_path / "gym.jsonl")) == 3
