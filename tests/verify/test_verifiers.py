"""The verifiers shared by the collector and the server: answer extraction, comparison, clear errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rollout_pipeline.errors import UserError
from rollout_pipeline.verify.verifiers import as_number, extract_answer, verify


@pytest.mark.parametrize("text, answer", [
    ("Step 1: 2 + 3 = 5.\nThe final answer is \\boxed{5}.", "5"),
    ("First \\boxed{3}, then on reflection \\boxed{4}.", "4"),                   # a later box replaces it
    ("The answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),                    # nested braces
    ("So the answer is 42 apples.", "42"),                                       # then "answer is"
    ("The answer is: x + 1", "x + 1"),
    ("I think 3 + 4 makes 7", "7"),                                              # then the last number
    ("Total: 1,234 dollars", "1,234"),
    ("37 + 48 = 85. The final answer is \\boxed{8", "8"),                        # a cut box is no box
    ("I will not give a final answer.", None),
])
def test_extraction_prefers_boxed_then_answer_is_then_the_last_number(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("text, answer", [
    ("37 + 48 = 85. The final answer is \\boxed{85}", "85"),        # a closed box was complete before the cut
    ("The answer is 85.\nLet me double-check: 37 + 4", "85"),        # so was an "answer is" with text after it
    ("37 + 48 = 85. The final answer is \\boxed{8", None),           # a cut box is no answer
    ("37 + 48 = 85. So the answer is 8", None),                      # "answer is 8" may be the 8 of 85
    ("37 + 48 = 8", None),                                           # and so may the last number
])
def test_an_output_cut_off_by_the_token_limit_counts_only_an_answer_completed_before_the_cut(text, answer):
    assert extract_answer(text, truncated=True) == answer
    assert verify("math", text, {"expected_answer": "8"}, truncated=True)["reward"] == (1.0 if answer == "8" else 0.0)


@pytest.mark.parametrize("expected, output, reward", [
    ("85", "\\boxed{85}", 1.0),
    ("85", "\\boxed{85.0}", 1.0),
    ("-48", "so the answer is -48.", 1.0),
    ("1234", "\\boxed{1,234}", 1.0),
    ("0.75", "\\boxed{3/4}", 1.0),
    ("85", "\\boxed{84}", 0.0),
    ("85", "no idea", 0.0),
    ("\\frac{1}{2}", "\\boxed{0.5}", 1.0),       # not a plain number: math-verify decides
    ("\\sqrt{2}", "\\boxed{\\sqrt 2}", 1.0),
    ("x + 1", "\\boxed{1 + x}", 1.0),
    ("x + 1", "\\boxed{x + 2}", 0.0),
])
def test_math_compares_numbers_exactly_and_falls_back_to_math_verify(expected, output, reward):
    result = verify("math", output, {"expected_answer": expected})
    assert result["reward"] == reward
    assert "extracted_answer" in result


def test_numbers_parse_exactly():
    assert as_number("1,234") == 1234 and as_number("-0.50") == as_number("-1/2") and as_number("85.") == 85
    assert as_number("x") is None and as_number("\\frac{1}{2}") is None


def test_exact_compares_stripped_strings():
    assert verify("exact", "  Paris \n", {"expected_answer": "Paris"}) == {"reward": 1.0, "extracted_answer": "Paris"}
    assert verify("exact", "paris", {"expected_answer": "Paris"})["reward"] == 0.0


def test_a_row_without_expected_answer_is_a_clear_error_not_a_zero():
    with pytest.raises(UserError, match="expected_answer"):
        verify("math", "\\boxed{1}", {"task_id": "t1"})


def test_an_unknown_verifier_suggests_the_closest_one():
    with pytest.raises(UserError, match="did you mean 'math'"):
        verify("mathh", "\\boxed{1}", {"expected_answer": "1"})


def test_numeric_answers_never_import_math_verify():
    code = ("import sys; from rollout_pipeline.verify.verifiers import verify; import rollout_pipeline.reference.server; "
            "verify('math', '\\\\boxed{85}', {'expected_answer': '85'}); "
            "assert 'math_verify' not in sys.modules, 'imported math_verify'")
    subprocess.run([sys.executable, "-c", code], check=True)
