"""`python scripts/prompts.py`: deterministic prompt sets in NeMo Gym's row format."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from rollout_pipeline.reference import policy
from rollout_pipeline.rows import normalize_row
from rollout_pipeline.stages.prompt_sets import generate_rows

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "scripts" / "prompts.py"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROMPTS), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rows_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_the_same_seed_writes_a_byte_identical_file_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", "4"), ("b", "4"), ("c", "5")):
        result = run(
            "--count", "300", "--difficulty", "mixed", "--seed", seed, "--out", str(tmp_path / f"{name}.jsonl")
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert "wrote 300 mixed prompts" in result.stdout


def test_rows_are_canonical_nemo_gym_rows_with_correct_string_answers(tmp_path):
    run("--count", "200", "--seed", "1", "--out", str(tmp_path / "p.jsonl"))
    rows = rows_of(tmp_path / "p.jsonl")
    assert len(rows) == 200
    for index, row in enumerate(rows):
        normalized = normalize_row(row, f"p.jsonl:{index + 1}")
        prompt = normalized.messages[0]["content"]
        assert prompt.startswith("What is ") and prompt.endswith("Give the final answer in \\boxed{}.")
        assert isinstance(row["expected_answer"], str)
        assert row["expected_answer"] == str(policy.parse_problem(prompt).answer)
        assert row["task_id"] == "arith-" + hashlib.sha256(prompt.encode()).hexdigest()[:12]


def test_task_ids_are_unique_within_a_set_and_stable_across_sets():
    big = generate_rows(3000, "easy", seed=0)
    assert len({r["task_id"] for r in big}) == 3000
    other = generate_rows(3000, "easy", seed=1)
    by_text = {r["responses_create_params"]["input"][0]["content"]: r["task_id"] for r in big}
    shared = [r for r in other if r["responses_create_params"]["input"][0]["content"] in by_text]
    assert shared and all(by_text[r["responses_create_params"]["input"][0]["content"]] == r["task_id"] for r in shared)


@pytest.mark.parametrize("difficulty, classes", [("easy", {"easy"}), ("hard", {"hard"}), ("mixed", {"easy", "hard"})])
def test_difficulty_controls_the_number_of_operations(difficulty, classes):
    rows = generate_rows(300, difficulty, seed=3)
    seen = {policy.difficulty_class(r["responses_create_params"]["input"][0]["content"]) for r in rows}
    assert seen == classes
    assert {r["difficulty"] for r in rows} == classes
    if difficulty == "hard":
        steps = {
            len(policy.candidate_texts(r["responses_create_params"]["input"][0]["content"])["correct"].splitlines()) - 1
            for r in rows
        }
        assert steps == {2, 3}


def test_without_arguments_every_set_in_params_yaml_is_written(tmp_path):
    params = {
        "prompts": {
            "sets": {
                "small": {"count": 20, "difficulty": "easy", "seed": 1},
                "tiny": {"count": 5, "difficulty": "hard", "seed": 2},
            }
        },
        "agents": {"a": {}},
        "objectives": {},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(rows_of(tmp_path / "data/prompts/small.jsonl")) == 20
    assert len(rows_of(tmp_path / "data/prompts/tiny.jsonl")) == 5
    (tmp_path / "data/prompts/tiny.jsonl").unlink()
    assert run("--set", "tiny", cwd=tmp_path).returncode == 0
    assert len(rows_of(tmp_path / "data/prompts/tiny.jsonl")) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--count", "3"], "needs both --count N and --out PATH"),
        (["--set", "mth"], "did you mean 'math'"),
        (["--count", "20000", "--difficulty", "easy", "--out", "x.jsonl"], "distinct easy prompts"),
        (["--count", "0", "--out", "x.jsonl"], "count"),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"prompts": {"sets": {"math": {"count": 1}}}, "agents": {"a": {}}, "objectives": {}})
    )
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_tiny_prompts_are_sums_of_two_digits_asking_for_the_number_alone():
    rows = generate_rows(40, "tiny", seed=21)
    for row in rows:
        text = row["responses_create_params"]["input"][0]["content"]
        a, b = text.removeprefix("What is ").removesuffix("? Answer with just the number.").split(" + ")
        assert 1 <= int(a) <= 9 and 1 <= int(b) <= 9 and row["expected_answer"] == str(int(a) + int(b))
        assert row["difficulty"] == "tiny"
    # The real-model recipe's held-out seed draws none of its training prompts (params.rl-real.yaml).
    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.rl-real.yaml").read_text())["prompts"][
        "sets"
    ]
    train, held_out = (
        {r["task_id"] for r in generate_rows(s["count"], s["difficulty"], s["seed"])}
        for s in (recipe["tiny"], recipe["tiny_heldout"])
    )
    assert not train & held_out
