"""The verifiers shared by the collector and the server: answer extraction, comparison, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from rollout_pipeline.errors import UserError
from rollout_pipeline.verify.math_answer import Answer
from rollout_pipeline.verify.verifiers import _fast_verdict, _math_verify_equal, as_number, extract_answer, verify


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Step 1: 2 + 3 = 5.\nThe final answer is \\boxed{5}.", "5"),
        ("First \\boxed{3}, then on reflection \\boxed{4}.", "4"),  # a later box replaces it
        ("The answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("So the answer is 42 apples.", "42"),  # then "answer is"
        ("**Answer:** **42**\n\nBecause 40 + 2 = 42 and 2 < 3", "42"),  # the last statement, in bold
        ("The answer is: x + 1", "x + 1"),
        ("I think 3 + 4 makes 7", "7"),  # then the last number
        ("Total: 1,234 dollars", "1,234"),
        ("37 + 48 = 85. The final answer is \\boxed{8", "8"),  # a cut box is no box
        ("I will not give a final answer.", None),
    ],
)
def test_extraction_prefers_boxed_then_answer_is_then_the_last_number(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text, answer",
    [
        ("37 + 48 = 85. The final answer is \\boxed{85}", "85"),  # a closed box was complete before the cut
        ("The answer is 85.\nLet me double-check: 37 + 4", "85"),  # so was an "answer is" with text after it
        ("37 + 48 = 85. The final answer is \\boxed{8", None),  # a cut box is no answer
        ("37 + 48 = 85. So the answer is 8", None),  # "answer is 8" may be the 8 of 85
        ("37 + 48 = 8", None),  # and so may the last number
    ],
)
def test_an_output_cut_off_by_the_token_limit_counts_only_an_answer_completed_before_the_cut(text, answer):
    assert extract_answer(text, truncated=True) == answer
    assert verify("math", text, {"expected_answer": "8"}, truncated=True)["reward"] == (1.0 if answer == "8" else 0.0)


@pytest.mark.parametrize(
    "expected, output, reward",
    [
        ("85", "\\boxed{85}", 1.0),
        ("85", "\\boxed{85.0}", 1.0),
        ("-48", "so the answer is -48.", 1.0),
        ("1234", "\\boxed{1,234}", 1.0),
        ("0.75", "\\boxed{3/4}", 1.0),
        ("85", "\\boxed{84}", 0.0),
        ("85", "no idea", 0.0),
        ("\\frac{1}{2}", "\\boxed{0.5}", 1.0),  # not a plain number: math-verify decides
        ("\\sqrt{2}", "\\boxed{\\sqrt 2}", 1.0),
        ("x + 1", "\\boxed{1 + x}", 1.0),
        ("x + 1", "\\boxed{x + 2}", 0.0),
    ],
)
def test_math_compares_numbers_exactly_and_falls_back_to_math_verify(expected, output, reward):
    result = verify("math", output, {"expected_answer": expected})
    assert result["reward"] == reward
    assert "extracted_answer" in result


def test_numbers_parse_exactly():
    assert as_number("1,234") == 1234 and as_number("-0.50") == as_number("-1/2") and as_number("85.") == 85
    assert as_number("x") is None and as_number("\\frac{1}{2}") is None
    assert as_number("1,5") is None and as_number("1 2") is None and as_number("1 000") is None


@pytest.mark.parametrize("expected", ["85", "-85", "1234", "1,234", "0.5", "3/4", "$85$", "1 000"])
@pytest.mark.parametrize(
    "written",
    [
        "85",
        "85.0",
        "-85",
        "1234",
        "1,234",
        "1 234",
        "0.50",
        ".5",
        "3/4",
        "0.75",
        "$85$",
        "1000",
        "1,000",
        "1,\\!000",
        "84",
        "85.5",
    ],
)
def test_the_fast_path_for_plain_numbers_decides_only_as_math_verify_would(expected, written):
    answer = Answer(written, "latex")
    fast = _fast_verdict(expected, answer)
    if fast is not None:
        assert fast == _math_verify_equal(expected, answer)


def test_exact_compares_stripped_strings():
    assert verify("exact", "  Paris \n", {"expected_answer": "Paris"}) == {"reward": 1.0, "extracted_answer": "Paris"}
    assert verify("exact", "paris", {"expected_answer": "Paris"})["reward"] == 0.0


def test_a_row_without_expected_answer_is_a_clear_error_not_a_zero():
    with pytest.raises(UserError, match="expected_answer"):
        verify("math", "\\boxed{1}", {"task_id": "t1"})


def test_an_unknown_verifier_suggests_the_closest_one():
    with pytest.raises(UserError, match="did you mean 'math'"):
        verify("mathh", "\\boxed{1}", {"expected_answer": "1"})


def test_plain_numeric_answers_in_the_common_shapes_never_import_math_verify():
    outputs = [
        "\\boxed{85}",
        "So the answer is 85.",
        "48 + 37 = 85\n#### 85",
        "I think 40 + 45 makes 85",
        "\\boxed{84}",
        "The answer is 1,234.",
        "<think>maybe 80</think>The answer is $85$ apples.",
    ]
    code = (
        "import sys; from rollout_pipeline.verify.verifiers import verify; import rollout_pipeline.reference.server\n"
        f"for output in {outputs!r}:\n"
        "    verify('math', output, {'expected_answer': '85'})\n"
        "assert 'math_verify' not in sys.modules, 'imported math_verify'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _reward(output: str, expected, truncated: bool = False) -> float:
    return verify("math", output, {"expected_answer": expected}, truncated)["reward"]


@pytest.mark.parametrize(
    "output, expected, reward",
    [
        ("<think>A first try gives \\boxed{42}.</think>The answer is \\boxed{41}.", "41", 1.0),
        ("<think>A first try gives \\boxed{42}.</think>The answer is \\boxed{41}.", "42", 0.0),
        ("<think>so the answer is 12</think>After checking, the answer is 13.", "12", 0.0),
        ("<think>Let me see: \\boxed{7}", "7", 0.0),  # the reasoning never ended: no answer given
    ],
)
def test_the_answer_is_looked_for_after_the_reasoning_never_inside_it(output, expected, reward):
    assert _reward(output, expected) == reward


@pytest.mark.parametrize(
    "output, expected, reward",
    [
        ("The answer is 18. Wait, that's wrong: 3 x 7 = 21, so the answer is 21.", "21", 1.0),
        ("The answer is 18. Wait, that's wrong: 3 x 7 = 21, so the answer is 21.", "18", 0.0),
        ("The answer is 18. Hmm, that is wrong.", "18", 0.0),  # retracted, and nothing replaces it
        ("The first part is \\boxed{255}.\nAdding the rest, the final answer is $10,455$.", "10455", 1.0),
        ("The first part is \\boxed{255}.\nAdding the rest, the final answer is $10,455$.", "255", 0.0),
        ("First \\boxed{3}, then on reflection \\boxed{4}.", "3", 0.0),
    ],
)
def test_the_last_final_answer_wins_and_a_retracted_one_never_does(output, expected, reward):
    assert _reward(output, expected) == reward


@pytest.mark.parametrize(
    "output, expected, reward",
    [
        ("The two numbers are \\boxed{3} and \\boxed{5}.", "3, 5", 1.0),  # an answer split over two boxes
        ("The two numbers are \\boxed{3} and \\boxed{5}.", "3", 0.0),
        ("It is \\boxed{2} or maybe \\boxed{3}.", "2", 0.0),  # a hedge matches neither option
        ("It is \\boxed{2} or maybe \\boxed{3}.", "3", 0.0),
    ],
)
def test_boxes_joined_in_one_sentence_are_one_answer_so_hedging_between_two_boxes_is_not_rewarded(
    output, expected, reward
):
    assert _reward(output, expected) == reward


@pytest.mark.parametrize(
    "output, wrong, right",
    [
        ("So $x = \\frac{7}{2}$.", "2", "3.5"),
        ("The side is $\\sqrt{3}$", "3", "\\sqrt{3}"),
        ("So there are $2^{10}$ subsets.", "10", "1024"),
        ("So there are 2^{10} subsets", "10", None),
        ("The code is AZ2", "2", None),
        ("So the answer is 3 more than the number of apples.", "3", None),
    ],
)
def test_a_trailing_number_counts_only_in_plain_prose_never_out_of_latex_or_words(output, wrong, right):
    assert _reward(output, wrong) == 0.0
    if right is not None:
        assert _reward(output, right) == 1.0


@pytest.mark.parametrize(
    "output, wrong, right",
    [
        ("\\boxed{2, 3}", "23", "2, 3"),
        ("The solution is $(3,2)$.", "32", "(3,2)"),
        ("The solution is (3,2).", "32", None),
        ("The interval is $[0,1)$.", "01", "[0,1)"),
        ("Die Antwort ist 1,5", "15", "1.5"),
        ("\\boxed{1,23}", "123", None),
        ("\\boxed{4, 10, -2}", "10, 4, -2", "4, 10, -2"),  # a bare list is read in order
        ("\\boxed{1,234}", "1.234", "1234"),
    ],
)
def test_commas_group_thousands_only_in_three_digit_groups_otherwise_lists_tuples_and_intervals_compare_as_such(
    output, wrong, right
):
    assert _reward(output, wrong) == 0.0
    if right is not None:
        assert _reward(output, right) == 1.0


@pytest.mark.parametrize(
    "output, right, wrong",
    [
        ("The answer is (B).", "B", "C"),
        ("\\boxed{C}", "C", "B"),
        ("Answer: C", "C", "A"),
        ("Option (B) looks right, but the answer is C.", "C", "B"),
        ("\\boxed{\\text{(D)}}", "(D)", "B"),
        ("\\boxed{B} or \\boxed{C}", None, "B"),  # a hedge between two options is neither
    ],
)
def test_multiple_choice_letters_are_read_from_boxes_parentheses_and_statements(output, right, wrong):
    if right is not None:
        assert _reward(output, right) == 1.0
    assert _reward(output, wrong) == 0.0


def test_expected_answer_may_be_a_list_of_acceptable_answers_any_of_which_scores():
    assert _reward("\\boxed{1}", ["1", "one"]) == 1.0
    assert _reward("The answer is one.", ["1", "one"]) == 1.0
    assert _reward("\\boxed{2}", ["1", "one"]) == 0.0
    assert _reward("\\boxed{3}", 3) == 1.0


@pytest.mark.parametrize(
    "value, message",
    [
        ({}, "'expected_answer' holds dict {}"),
        ([], "'expected_answer' is an empty list"),
        ([["1"]], "'expected_answer' holds a nested list"),
        ({"answer": "1"}, "'expected_answer' holds dict"),
        ("  ", "'expected_answer' is empty"),
        (True, "'expected_answer' holds bool True"),
    ],
)
def test_an_expected_answer_of_an_odd_type_is_a_clear_error_not_a_zero(value, message):
    with pytest.raises(UserError, match=re.escape(message)):
        verify("math", "\\boxed{1}", {"expected_answer": value})


@pytest.mark.parametrize(
    "output",
    [
        "\\boxed{" * 10_000,
        "\\[" * 10_000 + "1",
        "$x" * 10_000,
        "the answer is " * 10_000,
        "1 " * 50_000,
        "\\boxed{1} and " * 10_000,
    ],
)
def test_a_degenerate_output_is_scored_in_linear_time(output):
    started = time.perf_counter()
    verify("math", output, {"expected_answer": "1"})
    verify("math", output, {"expected_answer": "1"}, truncated=True)
    assert time.perf_counter() - started < 5, "quadratic: a 100 KB output should take milliseconds"
