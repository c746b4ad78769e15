"""Scoring apart from generating: a generate-only run, the score stage (`scripts/score.py`) and `rescore`.

A verdict can be decided again without asking the model again: a generate-only run writes the rollouts without a
reward, and scoring them later writes exactly the records an inline run writes. A scored file can be scored again
with a fixed or another verifier; an output a verifier could not score keeps its generation in the failures file,
so a fixed verifier scores it too. Each record says what scored it (`scored_by`: the verifier and a hash of its
code and settings), and the metrics warn about a file that mixes verdicts. All over real processes and a real
loopback server, whose request counts prove that scoring sends nothing to it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rollout_pipeline.collect.fingerprint import verifier_fingerprint
from rollout_pipeline.reference.embedded import start_embedded_server
from rollout_pipeline.stages.rollout_metrics import compute_metrics
from stage_testkit import health_config
from support import PY, ROOT, SCRIPTS, collect, make_prompts, read_jsonl, seed_args, server_stats, write_params

RUN = {"num_repeats": 2, "seed": 5}
ROLLOUTS = 8 * RUN["num_repeats"]
RELIABILITY_VERIFIERS = {"PYTHONPATH": str(ROOT / "tests" / "reliability")}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return make_prompts(tmp_path_factory.mktemp("apart") / "prompts.jsonl", 8, seed=3)


@pytest.fixture(scope="module")
def server():
    with start_embedded_server([]) as started:
        yield started


def _params(directory: Path, url: str, verifier: str = "math") -> Path:
    return write_params(
        directory,
        {
            "math_agent": {
                "protocol": "chat",
                "url": url,
                "model": "reference",
                "verifier": verifier,
                "verify_timeout_s": 60,
            }
        },
    )


def _generations(server) -> int:
    return server_stats(server.url)["requests"].get("/v1/chat/completions", 0)


def _score(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, str(SCRIPTS / "score.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_a_generated_file_scored_later_is_byte_for_byte_the_file_an_inline_run_writes(tmp_path, prompts, server):
    params = _params(tmp_path, server.url)
    collect(seed_args(prompts, tmp_path / "inline.jsonl", **RUN), tmp_path, params, check=True)
    generated = collect(
        seed_args(prompts, tmp_path / "generated.jsonl", **RUN) + ["--generate-only"], tmp_path, params, check=True
    )
    assert f"{ROLLOUTS} of {ROLLOUTS} rollouts generated" in generated.stderr
    assert '"reward"' not in generated.stdout  # no verdict yet, so no mean reward either
    assert all(
        "reward" not in record and "scored_by" not in record for record in read_jsonl(tmp_path / "generated.jsonl")
    )

    asked = _generations(server)
    scored = _score(
        "--out", "scored.jsonl", "--agent", "math_agent", "--params", str(params), "generated.jsonl", cwd=tmp_path
    )
    assert scored.returncode == 0, scored.stderr
    assert _generations(server) == asked, "scoring asked the model server"
    assert f"{ROLLOUTS} of {ROLLOUTS} rollouts scored by math" in scored.stderr
    assert (tmp_path / "scored.jsonl").read_bytes() == (tmp_path / "inline.jsonl").read_bytes()


def test_rescoring_with_another_verifier_replaces_reward_extras_and_scored_by_in_place(tmp_path, prompts, server):
    params = _params(tmp_path, server.url)
    out = tmp_path / "rollouts.jsonl"
    collect(seed_args(prompts, out, **RUN), tmp_path, params, check=True)
    by_math = read_jsonl(out)
    assert {record["scored_by"]["verifier"] for record in by_math} == {"math"}
    assert all(record["scored_by"]["extras"] == ["extracted_answer"] for record in by_math)

    asked = _generations(server)
    result = subprocess.run(
        [str(Path(PY).parent / "rescore"), str(out), "--verifier", "exact"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _generations(server) == asked
    by_exact = read_jsonl(out)
    assert [r["output"] for r in by_exact] == [r["output"] for r in by_math]
    # exact compares the whole output with the answer: a sentence around \boxed{} never equals it
    assert {record["reward"] for record in by_exact} == {0.0}
    assert all(r["extracted_answer"] == r["output"].strip() for r in by_exact)
    assert {record["scored_by"]["verifier"] for record in by_exact} == {"exact"}
    assert list(by_exact[0]) == list(by_math[0]), "the record's fields moved"


def test_an_output_the_verifier_could_not_score_keeps_its_generation_and_a_fixed_verifier_scores_it(
    tmp_path, prompts, server
):
    params = _params(tmp_path, server.url, verifier="reliability_verifiers:returns_none")
    out = tmp_path / "rollouts.jsonl"
    first = collect(seed_args(prompts, out, **RUN, max_failure_rate=1.0), tmp_path, params, env=RELIABILITY_VERIFIERS)
    assert first.returncode == 0, first.stderr
    failures = read_jsonl(tmp_path / "rollouts.failures.ndjson")
    assert failures and {f["cause"] for f in failures} == {"verifier_error"}
    assert all(f["generation"]["output"] and "reward" not in f["generation"] for f in failures)
    assert len(read_jsonl(out)) + len(failures) == ROLLOUTS

    asked = _generations(server)
    fixed = _score("rollouts.jsonl", "--verifier", "math", "--params", str(params), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert _generations(server) == asked
    records = read_jsonl(out)
    assert [(r["task_index"], r["rollout_index"]) for r in records] == [(t, r) for t in range(8) for r in range(2)]
    assert (tmp_path / "rollouts.failures.ndjson").read_text() == ""
    assert f"{ROLLOUTS} of {ROLLOUTS} rollouts scored" in fixed.stderr


def test_too_many_verifier_failures_leave_the_previous_rollouts_in_place(tmp_path, prompts, server):
    params = _params(tmp_path, server.url)
    out = tmp_path / "rollouts.jsonl"
    collect(seed_args(prompts, out, **RUN), tmp_path, params, check=True)
    before = out.read_bytes()
    result = _score(
        "rollouts.jsonl",
        "--verifier",
        "reliability_verifiers:always_none",
        "--params",
        str(params),
        cwd=tmp_path,
        env=RELIABILITY_VERIFIERS,
    )
    assert result.returncode == 1
    assert f"error: {ROLLOUTS} of {ROLLOUTS} rollouts failed (max_failure_rate 0.0 allows 0)" in result.stderr
    assert "returned reward None" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*scoring*")), "a temp file was left behind"


def test_the_metrics_warn_about_a_file_that_mixes_verdicts_of_two_verifier_versions(tmp_path, prompts, server):
    params = _params(tmp_path, server.url)
    collect(seed_args(prompts, tmp_path / "a.jsonl", **RUN), tmp_path, params, check=True)
    _score("a.jsonl", "--out", "b.jsonl", "--verifier", "exact", "--params", str(params), cwd=tmp_path)
    first, second = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in first[: ROLLOUTS // 2] + second[ROLLOUTS // 2 :]))
    result = compute_metrics(mixed, pass_threshold=1.0, health=health_config())
    assert any("mixes rewards from different verifiers or versions" in note for note in result.notes)
    assert sorted(result.metrics["scored_by"].values()) == [ROLLOUTS // 2, ROLLOUTS // 2]
    assert "scored_by" not in compute_metrics(tmp_path / "a.jsonl", pass_threshold=1.0, health=health_config()).metrics


def test_what_scored_a_record_changes_with_the_verifier_code_and_never_holds_url_credentials(tmp_path, monkeypatch):
    module = tmp_path / "judge_v.py"
    module.write_text("def judge(row, output, response):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = verifier_fingerprint("chat", "judge_v:judge")
    module.write_text("def judge(row, output, response):\n    return 0.5\n")
    importlib.invalidate_caches()
    sys.modules.pop("judge_v")
    after = verifier_fingerprint("chat", "judge_v:judge")
    assert before["verifier"] == after["verifier"] == "judge_v:judge" and before["hash"] != after["hash"]
    remote = verifier_fingerprint("chat", "http://user:s3cret-pass@127.0.0.1:9/verify")
    assert "s3cret-pass" not in str(remote) and remote["verifier"].endswith("127.0.0.1:9/verify")
    assert verifier_fingerprint("agent", "math") == {"verifier": "agent"}


def test_a_file_that_is_not_rollouts_is_one_line_naming_file_and_line(tmp_path, prompts):
    params = _params(tmp_path, "embedded")
    result = _score(str(prompts), "--out", "x.jsonl", "--verifier", "math", "--params", str(params), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{prompts}:1: not a rollout record" in result.stderr
    neither = _score(str(prompts), "--params", str(params), cwd=tmp_path)
    assert "give --agent NAME" in neither.stderr
