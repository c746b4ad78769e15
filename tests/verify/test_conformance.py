"""The math verifier against the public verdicts of the field's graders and test suites (conformance_cases.jsonl).

Each line of conformance_cases.jsonl is one labelled case: a model output, the expected answer, the public verdict
(1 right, 0 wrong), whether the output was cut by the token limit, and the `source` it was carried over from
(repository, commit, file and the test or row in it). Only the facts are carried over: strings and verdicts.
A case marked `differs` is one whose public verdict the verifier does not share, by design; the reason is in the
mark, and it counts as a disagreement in the figures below.
"""

from __future__ import annotations

import collections
import functools
import json
from pathlib import Path

import pytest

from rollout_pipeline.verify.verifiers import verify

CASES_FILE = Path(__file__).with_name("conformance_cases.jsonl")
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()]
MIN_AGREEMENT = 0.97


@functools.lru_cache(maxsize=1)
def our_verdicts() -> tuple[int, ...]:
    return tuple(
        int(
            verify("math", case["output"], {"expected_answer": case["expected_answer"]}, case.get("truncated", False))[
                "reward"
            ]
        )
        for case in CASES
    )


def _case_id(case: dict) -> str:
    where = case["source"].get("where") or case["source"]["path"]
    return f"{case['source']['repo']}:{where}"[:90]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(case) for case in CASES])
def test_the_verifier_gives_the_public_verdict_unless_the_case_is_marked_as_differing_by_design(index):
    case = CASES[index]
    ours = our_verdicts()[index]
    if "differs" in case:
        assert ours != case["verdict"], (
            f"now agrees with the public verdict: drop the 'differs' mark ({case['differs']})"
        )
    else:
        assert ours == case["verdict"], (
            f"public verdict {case['verdict']}, ours {ours}: expected "
            f"{case['expected_answer']!r}, output ...{case['output'][-300:]!r}"
        )


def test_every_case_cites_its_source_and_states_a_verdict():
    for case in CASES:
        assert set(case) <= {"output", "expected_answer", "verdict", "truncated", "source", "note", "differs"}
        assert case["verdict"] in (0, 1) and isinstance(case["output"], str)
        source = case["source"]
        assert source["repo"] and source["path"]
        assert source["repo"] == "this project" or len(source["commit"]) == 40


def test_the_verifier_agrees_with_at_least_97_percent_of_the_public_verdicts_with_no_false_positive(capsys):
    by_source: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case, ours in zip(CASES, our_verdicts()):
        counts = by_source[case["source"]["repo"]]
        counts["cases"] += 1
        counts["agree"] += ours == case["verdict"]
        counts["false_positive"] += ours == 1 and case["verdict"] == 0
        counts["marked_false_positive"] += ours == 1 and case["verdict"] == 0 and "differs" in case
    total = sum(by_source.values(), collections.Counter())
    with capsys.disabled():
        print()
        for name, counts in sorted(by_source.items()) + [("all", total)]:
            print(
                f"  {name:34} {counts['agree']:4}/{counts['cases']:<4} {counts['agree'] / counts['cases']:7.1%} agree"
                f"  {counts['false_positive']} false positive(s), {counts['marked_false_positive']} of them marked"
            )
    assert total["false_positive"] == total["marked_false_positive"], "a false positive that no mark explains"
    assert total["agree"] / total["cases"] >= MIN_AGREEMENT
    assert total["cases"] >= 500
