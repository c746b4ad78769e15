"""The verifier contract, over real collector processes and a real loopback server.

A verdict is a finite number, or a dict with a finite `reward` and JSON extras. Anything else fails that rollout
with cause `verifier_error` (or `verifier_timeout`), naming the verifier and the value, and is never a reason to
sample again: a new sample would keep only the outputs the verifier likes. A NeMo Gym reply with
`mask_sample: true` is not scored: an outcome ("masked"), not a failure of the run, and never training data.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BASE_RUN
from reliability_support import COLLECT, Misbehaving, collect_command, fast_agent, last_line, run_collect
from rollout_pipeline.collect.progress import ProgressStore, progress_path
from rollout_pipeline.reference.embedded import start_embedded_server
from support import PY, SCRIPTS, free_port, read_jsonl, server_stats, write_params

ROLLOUTS = 12 * BASE_RUN["num_repeats"]  # the suite's 12 prompts x 2
VERIFIERS_ON_PATH = {"PYTHONPATH": str(Path(__file__).parent)}
SLOW_SPAWN = Path(__file__).parent / "slow_spawn"

# verifier function -> what the failures file's message must quote of the value it returned
UNSCORABLE = {
    "always_none": "returned reward None",
    "always_nan": "returned reward nan",
    "always_inf": "returned reward inf",
    "always_bool": "returned reward True",
    "always_string_with_escapes": "returned reward '\\x1b[31m1.0\\x1b[0m'",
    "always_raises": "raised ValueError('judge reply unparseable')",
    "extras_set": "extras that are not JSON",
    "extras_big_int": "extras that are not JSON",
    "extras_int_keys": "extras that are not JSON",
}


def _side(out: Path, suffix: str) -> Path:
    return out.with_name(out.name.replace(".jsonl", suffix))


def _chat_requests(url: str) -> int:
    return server_stats(url)["requests"].get("/v1/chat/completions", 0)


@pytest.mark.parametrize("function", sorted(UNSCORABLE))
def test_an_unscorable_verdict_fails_that_rollout_as_verifier_error_naming_verifier_and_value_and_is_never_resampled(
    tmp_path, prompts, function
):
    out = tmp_path / "out.jsonl"
    with start_embedded_server([]) as server:  # its own server: its request count is this run's alone
        # A generous verify_timeout_s: a sync verifier runs in a worker process, whose start on a busy machine must
        # not turn this verdict into a timeout.
        result = run_collect(
            tmp_path,
            prompts,
            out,
            fast_agent(server.url, verifier=f"reliability_verifiers:{function}", verify_timeout_s=60),
            env=VERIFIERS_ON_PATH,
            timeout=120,
            **BASE_RUN,
        )
        asked = _chat_requests(server.url)
    assert asked == ROLLOUTS, f"{asked} generations for {ROLLOUTS} rollouts: an unscorable output was sampled again"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert last_line(result.stderr).startswith(f"error: {ROLLOUTS} of {ROLLOUTS} rollouts failed"), result.stderr
    assert f"0 of {ROLLOUTS} rollouts scored (not scored: {ROLLOUTS} verifier_error)" in result.stderr
    assert "\x1b" not in result.stderr, "a verifier's control characters never reach the terminal"
    failures = read_jsonl(_side(out, ".failures.ndjson"))
    assert len(failures) == ROLLOUTS and {f["cause"] for f in failures} == {"verifier_error"}
    for failure in failures:
        assert f"verifier 'reliability_verifiers:{function}'" in failure["error"], failure["error"]
        assert UNSCORABLE[function] in failure["error"], failure["error"]
        assert "\x1b" not in failure["error"]
    stats = json.loads(_side(out, ".stats.json").read_text())
    assert stats["retries"] == {} and stats["requests"] == ROLLOUTS
    assert stats["coverage"] == {"expected": ROLLOUTS, "scored": 0, "not_scored": {"verifier_error": ROLLOUTS}}


def test_a_run_that_ends_while_a_verifier_worker_is_still_starting_up_ends_cleanly(tmp_path, prompts, upstream):
    # The pool's library unlinks the pool's locks before it stops the workers; a worker still starting up (on a
    # busy machine, seconds after it was launched) then failed to read them and printed a traceback.
    markers = tmp_path / "spawn-markers"
    markers.mkdir()
    out = tmp_path / "out.jsonl"
    env = {
        "PYTHONPATH": f"{VERIFIERS_ON_PATH['PYTHONPATH']}:{SLOW_SPAWN}",
        "SLOW_SPAWN_MARKER_DIR": str(markers),
        "SLOW_SPAWN_UNTIL": str(progress_path(out)),
        "SLOW_SPAWN_LINES": str(1 + ROLLOUTS),  # the header and every record: the run's work is done
    }
    verifier = "reliability_verifiers:math_in_a_worker"
    result = run_collect(
        tmp_path, prompts, out, fast_agent(upstream.url, verifier=verifier, verify_timeout_s=60), env=env, **BASE_RUN
    )
    assert list(markers.glob("slow-child-*")), "no verifier worker was still starting: the case was not set up"
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(read_jsonl(out)) == ROLLOUTS


def test_a_verify_url_whose_reward_is_not_a_number_fails_as_verifier_error_and_the_output_is_never_resampled(
    tmp_path, prompts
):
    out = tmp_path / "out.jsonl"
    with start_embedded_server([]) as server, Misbehaving(server.url, "string-reward", rate=1.0) as verifier:
        result = run_collect(
            tmp_path, prompts, out, fast_agent(server.url, verifier=f"{verifier.url}/verify"), **BASE_RUN
        )
        asked, verified = _chat_requests(server.url), verifier.stats()["posts"]
    assert (asked, verified) == (ROLLOUTS, ROLLOUTS), "one generation and one /verify per rollout, never again"
    assert result.returncode == 1, result.stderr
    failures = read_jsonl(_side(out, ".failures.ndjson"))
    assert {f["cause"] for f in failures} == {"verifier_error"} and len(failures) == ROLLOUTS
    assert f"verifier '{verifier.url}/verify': returned reward '1.0', not a finite number" in failures[0]["error"]


def test_an_async_verifier_that_awaits_forever_fails_as_verifier_timeout_within_verify_timeout_s(
    tmp_path, prompts, upstream
):
    out = tmp_path / "out.jsonl"
    started = time.monotonic()
    result = run_collect(
        tmp_path,
        prompts,
        out,
        fast_agent(upstream.url, verifier="reliability_verifiers:awaits_forever", verify_timeout_s=0.5),
        env=VERIFIERS_ON_PATH,
        timeout=60,
        **BASE_RUN,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    failures = read_jsonl(_side(out, ".failures.ndjson"))
    assert len(failures) == ROLLOUTS and {f["cause"] for f in failures} == {"verifier_timeout"}
    assert "within 0.5 s (verify_timeout_s)" in failures[0]["error"]
    assert elapsed < 30, f"the run took {elapsed:.0f} s: the timeouts are concurrent, not one after another"


def test_a_reward_of_1e308_ends_the_run_and_the_metrics_stage_cleanly_though_its_sums_overflow(
    tmp_path, prompts, upstream
):
    out = tmp_path / "out.jsonl"
    result = run_collect(
        tmp_path,
        prompts,
        out,
        fast_agent(upstream.url, verifier="reliability_verifiers:huge_reward"),
        env=VERIFIERS_ON_PATH,
        **BASE_RUN,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert {r["reward"] for r in read_jsonl(out)} == {1e308}
    stats = json.loads(_side(out, ".stats.json").read_text())
    assert stats["coverage"]["scored"] == ROLLOUTS and stats["reward_mean"] == 1e308, "the mean, not a nan or null"
    assert json.loads(result.stdout[result.stdout.index("{") :]) == {"reward": 1e308}
    metrics = tmp_path / "metrics.json"
    stage = subprocess.run(
        [
            PY,
            str(SCRIPTS / "metrics.py"),
            "--objective",
            "rl",
            "--in",
            str(out),
            "--out",
            str(metrics),
            "--curve",
            str(tmp_path / "curve.json"),
            "--params",
            str(
                write_params(
                    tmp_path,
                    {"math_agent": fast_agent(upstream.url)},
                    {"rl": {"agent_name": "math_agent", "prompts": str(prompts)}},
                )
            ),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert stage.returncode == 0 and "Traceback" not in stage.stderr, stage.stderr
    assert json.loads(metrics.read_text())["rollouts"] == ROLLOUTS


def test_a_verify_url_that_masks_every_sample_is_not_scored_never_resampled_and_does_not_fail_the_run(
    tmp_path, prompts
):
    out = tmp_path / "out.jsonl"
    with start_embedded_server(["--fail-ng-verify-mask", "1.0"]) as server:
        result = run_collect(
            tmp_path, prompts, out, fast_agent(server.url, verifier=f"{server.url}/verify"), **BASE_RUN
        )  # max_failure_rate 0: a masked row is no failure
        counts = server_stats(server.url)["requests"]
    assert result.returncode == 0, result.stderr
    assert counts["/v1/chat/completions"] == ROLLOUTS and counts["/verify"] == ROLLOUTS
    assert read_jsonl(out) == [], "a masked rollout is never written as scored"
    failures = read_jsonl(_side(out, ".failures.ndjson"))
    assert len(failures) == ROLLOUTS
    for failure in failures:
        assert failure["cause"] == "masked" and failure["masked"] is True and failure["failure_kind"] == "judge_failed"
        assert failure["failure_reason"].startswith("JudgeError")
        assert failure["reply"]["reward_components"] == {"correct": 0.0, "format": 1.0}
    assert f"0 of {ROLLOUTS} rollouts scored (not scored: {ROLLOUTS} masked)" in result.stderr


def _masked_run(tmp_path: Path, prompts: Path, server_url: str, *extra: str) -> subprocess.CompletedProcess:
    return run_collect(
        tmp_path,
        prompts,
        tmp_path / "out.jsonl",
        fast_agent(server_url, protocol="agent"),
        extra=list(extra),
        **BASE_RUN,
    )


def test_masked_run_rows_are_an_outcome_kept_out_of_training_data_and_sent_again_only_with_retry_masked(
    tmp_path, prompts
):
    out = tmp_path / "out.jsonl"
    with start_embedded_server(["--fail-ng-mask", "0.5", "--fault-seed", "3"]) as server:
        first = _masked_run(tmp_path, prompts, server.url)
        after_first = server_stats(server.url)["requests"]["/run"]
        again = _masked_run(tmp_path, prompts, server.url)
        after_again = server_stats(server.url)["requests"]["/run"]
        failures = read_jsonl(_side(out, ".failures.ndjson"))
        records = read_jsonl(out)
        retried = _masked_run(tmp_path, prompts, server.url, "--retry-masked")
        after_retry = server_stats(server.url)["requests"]["/run"]
    masked = len(failures)
    assert first.returncode == 0, first.stderr  # under max_failure_rate 0
    assert 0 < masked < ROLLOUTS and len(records) + masked == ROLLOUTS and after_first == ROLLOUTS
    assert all(f["cause"] == "masked" and f["failure_kind"] == "judge_failed" for f in failures)
    assert not {(f["task_index"], f["rollout_index"]) for f in failures} & {
        (r["task_index"], r["rollout_index"]) for r in records
    }, "a masked rollout never reaches the rollout file"
    assert f"{len(records)} of {ROLLOUTS} rollouts scored (not scored: {masked} masked)" in first.stderr
    # Run again: nothing is sent, the masked rows included.
    assert again.returncode == 0 and after_again == after_first and "already collected" in again.stderr
    assert "--retry-masked" in again.stderr
    # --retry-masked: exactly the masked rows are sent again; the scored ones are kept as they were.
    assert retried.returncode == 0, retried.stderr
    assert after_retry - after_again == masked
    kept = {(r["task_index"], r["rollout_index"]): r for r in read_jsonl(out)}
    assert all(kept[(r["task_index"], r["rollout_index"])] == r for r in records)
    # The filter stage never sees a masked row: it reads only the rollout file.
    sft = tmp_path / "sft.jsonl"
    stage = subprocess.run(
        [
            PY,
            str(SCRIPTS / "filter.py"),
            "--in",
            str(out),
            "--out",
            str(sft),
            "--params",
            str(write_params(tmp_path, {})),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert stage.returncode == 0, stage.stderr
    now_masked = len(read_jsonl(_side(out, ".failures.ndjson")))
    assert f"{len(kept)} of {ROLLOUTS} rollouts scored" in stage.stdout
    assert len(kept) + now_masked == ROLLOUTS


def test_an_interrupted_run_resumes_without_sending_its_masked_rows_again(tmp_path, prompts):
    """The masked marker is in the progress file, as a skip's is: a resume after a crash does not ask for it."""
    out = tmp_path / "out.jsonl"
    with start_embedded_server(["--fail-ng-mask", "0.5", "--fault-seed", "3"]) as server:
        first = _masked_run(tmp_path, prompts, server.url)
        masked = len(read_jsonl(_side(out, ".failures.ndjson")))
        # Make it an interrupted run: the finished rollouts and masks back in a progress file, one record lost.
        header = json.loads(_side(out, ".stats.json").read_text())["run_identity"]
        ProgressStore.resume_from_output(out, header, prompts.stat().st_size, retry_cause="none")
        progress = progress_path(out)
        lines = progress.read_bytes().splitlines(keepends=True)
        dropped = next(line for line in lines[1:] if b'"skipped"' not in line)
        progress.write_bytes(b"".join(line for line in lines if line != dropped))
        out.unlink()
        before = server_stats(server.url)["requests"]["/run"]
        resumed = subprocess.run(
            collect_command(tmp_path, prompts, out, fast_agent(server.url, protocol="agent"), **BASE_RUN),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
        sent = server_stats(server.url)["requests"]["/run"] - before
    assert first.returncode == 0 and masked
    assert resumed.returncode == 0, resumed.stderr
    assert sent == 1, f"the resume sent {sent} requests: only the lost rollout is asked for, no masked one"
    assert f"{masked} skipped" in resumed.stdout


def test_the_run_body_carries_nemo_gyms_run_indices_and_the_record_keeps_what_the_agent_echoes(
    tmp_path, prompts, upstream
):
    out = tmp_path / "out.jsonl"
    result = run_collect(tmp_path, prompts, out, fast_agent(upstream.url, protocol="agent"), **BASE_RUN)
    assert result.returncode == 0, result.stderr
    for record in read_jsonl(out):  # the reference agent echoes its request body, as NeMo Gym's agents do
        assert (record["_ng_task_index"], record["_ng_rollout_index"]) == (
            record["task_index"],
            record["rollout_index"],
        )


def test_a_failure_names_nemo_gyms_registered_kind_beside_our_cause(tmp_path, prompts):
    out = tmp_path / "out.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_collect(tmp_path, prompts, out, fast_agent(dead, max_retries=0, give_up_after_s=1.0), limit=1)
    assert result.returncode == 1
    failure = read_jsonl(_side(out, ".failures.ndjson"))[0]
    assert (failure["cause"], failure["failure_kind"]) == ("connection", "transport_unreachable")


def test_gym_eval_run_takes_nemo_gyms_flags_and_collects_what_the_seed_syntax_collects(tmp_path, prompts, upstream):
    params = write_params(tmp_path, {"math_agent": fast_agent(upstream.url)})
    gym = str(Path(PY).parent / "gym")
    by_gym = subprocess.run(
        [
            gym,
            "eval",
            "run",
            "-a",
            "math_agent",
            "-i",
            str(prompts),
            "-o",
            str(tmp_path / "g.jsonl"),
            "--num-repeats",
            "2",
            "--concurrency",
            "4",
            "--resume",
            "--limit",
            "5",
            "--seed",
            "21",
            "--temperature",
            "0.7",
            "--top-p",
            "0.9",
            "--max-output-tokens",
            "64",
            "--params",
            str(params),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    by_seed = subprocess.run(
        [
            *COLLECT,
            "+agent_name=math_agent",
            f"+input_jsonl_fpath={prompts}",
            f"+output_jsonl_fpath={tmp_path / 's.jsonl'}",
            "+num_repeats=2",
            "+num_samples_in_parallel=4",
            "+limit=5",
            "+seed=21",
            "+responses_create_params.temperature=0.7",
            "+responses_create_params.top_p=0.9",
            "+responses_create_params.max_output_tokens=64",
            "--params",
            str(params),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert by_gym.returncode == 0 and by_seed.returncode == 0, by_gym.stderr + by_seed.stderr
    assert (tmp_path / "g.jsonl").read_bytes() == (tmp_path / "s.jsonl").read_bytes()
    assert "10 of 10 rollouts scored" in by_gym.stderr


@pytest.mark.parametrize("argv,flag", [(["--bogus", "1"], "'--bogus'"), (["--num-repeat", "2"], "'--num-repeat'")])
def test_gym_eval_run_names_an_unknown_flag_in_one_line(tmp_path, argv, flag):
    result = subprocess.run(
        [str(Path(PY).parent / "gym"), "eval", "run", "-a", "x", "-i", "in.jsonl", "-o", "out.jsonl", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"unknown flag {flag}" in result.stderr
