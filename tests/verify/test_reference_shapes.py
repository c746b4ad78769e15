"""The reference policy's outputs score as their kind says, whole or cut at any token: `make run`'s rewards."""

from __future__ import annotations

from rollout_pipeline.reference.policy import NOT_ARITHMETIC_TEXT, parse_problem
from rollout_pipeline.stages.prompt_sets import generate_rows
from rollout_pipeline.verify.verifiers import verify


def test_every_reference_output_whole_or_cut_at_any_token_scores_1_exactly_when_it_completed_the_right_box():
    checked = 0
    for row in generate_rows(150, "mixed", seed=0):
        prompt = row["responses_create_params"]["input"][0]["content"]
        expected = row["expected_answer"]
        for candidate in parse_problem(prompt).candidates:
            right = candidate.answer is not None and str(candidate.answer) == expected
            box = f"\\boxed{{{candidate.answer}}}"
            for end in candidate.ends:
                text = candidate.text[:end]
                cut = end < len(candidate.text)
                reward = verify("math", text, {"expected_answer": expected}, truncated=cut)["reward"]
                assert reward == (1.0 if right and box in text else 0.0), (candidate.kind, text, cut)
                checked += 1
    assert checked > 10_000


def test_the_reference_policys_refusal_of_a_non_arithmetic_prompt_scores_0():
    assert verify("math", NOT_ARITHMETIC_TEXT, {"expected_answer": "85"})["reward"] == 0.0
