"""Verifiers shared by the collector and the embedded server's /run and /verify.

`verify(kind, output_text, row)` -> at least {"reward": float, "extracted_answer": str | None}.

- `math`: locate the final answer (math_answer.py: after the reasoning, the last final answer, a number only from
  plain prose, a cut output's completed part) and compare it with `row["expected_answer"]` -- one answer or a list
  of acceptable ones -- with math-verify (`parse` with its LaTeX and expression extraction, `verify`). Commas group
  thousands only in 3-digit groups (1,234); otherwise `\\boxed{2, 3}`, `(3,2)`, `[0,1)` are a set, a tuple and an
  interval, and a prose 1,5 is a decimal comma. Plain numbers on both sides compare by exact value without
  importing math-verify (~0.4 s) when that decides it as math-verify would: equal values, or two unequal
  integers.
- `exact`: the stripped output equals the stripped expected answer.

Reward is 1.0 or 0.0. A row without a usable `expected_answer` is a UserError (a data problem, not a wrong
answer: scoring it 0 would silently poison the rollouts).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.rows import expected_answers
from rollout_pipeline.verify import VERIFIER_KINDS
from rollout_pipeline.verify.math_answer import LETTERS, Answer, locate_answer

_PLAIN_INT_RE = re.compile(r"-?[0-9]{1,300}")  # bounded: int() refuses over 4300 digits
_NUMERIC_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?")
_ONE_FORMULA_RE = re.compile(r"\$\s*([^$]*?)\s*\$|\\\(\s*(.*?)\s*\\\)", re.DOTALL)
_PERCENT_RE = re.compile(r"\s*\\?%\s*$")
_LIST_OPENERS = ("(", "[", "{", "\\{", "\\left", "\\begin")
_LETTER_ANSWER_RE = re.compile(r"\(?([A-E])\)?")


def as_number(text: str) -> Fraction | int | None:
    """Exact value of a plain numeric answer ('1,234', '-0.50', '3/4', '$12', '85.'), else None. A comma counts only
    as a thousands separator in 3-digit groups: '1,5' and '2,3' are not numbers here."""
    if _PLAIN_INT_RE.fullmatch(text):
        return int(text)  # the common case, without the cost of a Fraction (equal to it in comparisons)
    # TeX's \\! thin space may group thousands (1,\\!000); a plain space may not: math-verify reads "$1 000$" as 1 x 000
    cleaned = text.strip().strip("$").replace("\\!", "").rstrip(".").strip()
    cleaned = cleaned.removeprefix("\\$")
    if not cleaned or not any(c.isdigit() for c in cleaned) or not _NUMERIC_RE.fullmatch(cleaned):
        return None
    try:
        return Fraction(cleaned.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


MAX_MATH_VERIFY_CHARS = 1000  # longer answers are compared as text: math-verify's parser is not linear


def _same_text(expected: str, answer: str) -> bool:
    return " ".join(expected.split()) == " ".join(answer.split())


def _fast_verdict(expected: str, answer: Answer) -> bool | None:
    """The verdict on two plain numbers where math-verify's would be the same, else None (math-verify decides)."""
    text = answer.text
    if answer.kind == "region":
        formula = _ONE_FORMULA_RE.fullmatch(text)  # "$85$": math-verify reads the number in it
        if formula is None:
            return None
        text = formula.group(1) or formula.group(2)
    a, b = as_number(expected), as_number(text)
    if a is None or b is None:
        return None
    if a == b:
        return True
    whole = all("." not in t and "/" not in t for t in (expected, text))
    return False if whole else None  # unequal decimals may still agree to math-verify's rounding


def _math_verify_equal(expected: str, answer: Answer) -> bool:
    if len(expected) > MAX_MATH_VERIFY_CHARS or len(answer.text) > MAX_MATH_VERIFY_CHARS:
        return _same_text(expected, answer.text)
    import logging

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse  # ~0.4 s
    from math_verify import verify as mv_verify

    # Its timeout warnings print the whole expression; a timeout here is just a non-match.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    # math-verify times out with signal.alarm, which only works on the main thread (the collector sends long
    # outputs to a process pool that kills a verifier that overruns).
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    latex_then_expr = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    def read(text: str, kind: str) -> list:
        if kind != "region":
            text = _PERCENT_RE.sub("", text)  # 10\\% is 10: math-verify drops the sign too, but not in every form
        if kind == "number":
            return parse(text, [ExprExtractionConfig()], parsing_timeout=timeout)
        if kind == "latex":
            text = f"$${text}$$" if "\n" in text else f"${text}$"
        return parse(text, latex_then_expr, parsing_timeout=timeout)

    boxed_gold = locate_answer(expected) if "\\boxed" in expected else None  # a worked solution: its box
    gold = read(boxed_gold.text, boxed_gold.kind) if boxed_gold else read(expected, _expected_kind(expected))
    pred = read(answer.text, answer.kind)
    if not gold or not pred:
        return _same_text(expected, answer.text)
    return bool(mv_verify(gold, pred, timeout_seconds=timeout))


def _expected_kind(expected: str) -> str:
    if "$" in expected or "\\boxed" in expected or "\\(" in expected or "\\[" in expected:
        return "region"
    return "number" if re.fullmatch(r"-?(?:\d{1,3}(?: \d{3})+|[\d,]*\d)(?:\.\d+)?", expected) else "latex"


def answers_match(expected: str, answer: Answer) -> bool:
    """Whether `answer` is `expected`: letters by letter, plain numbers by exact value, the rest by math-verify."""
    if answer.kind == "letter":
        letter = _LETTER_ANSWER_RE.fullmatch(expected)
        return bool(letter) and letter.group(1) == answer.text.upper()
    if expected == answer.text:
        return True  # what the checks below would conclude, at the cost of one comparison
    fast = _fast_verdict(expected, answer)
    if fast is not None:
        return fast
    if _same_text(expected, answer.text):
        return True
    expected_items, answer_items = _bare_list(expected), _bare_list(answer.text)
    if expected_items and answer_items and answer.kind == "latex":
        # "10, 4, -2" is not "4, 10, -2": a bare list is read in order (braces make a set, parentheses a tuple)
        return len(expected_items) == len(answer_items) and all(
            answers_match(e, Answer(a, "latex")) for e, a in zip(expected_items, answer_items)
        )
    return _math_verify_equal(expected, answer)


def _bare_list(text: str) -> list[str] | None:
    """The items of a list written without brackets ("1, 2, 3"), split at its top-level commas, else None."""
    text = text.strip()
    if "," not in text or text.startswith(_LIST_OPENERS) or as_number(text) is not None or "$" in text:
        return None
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:index].strip())
            start = index + 1
    items.append(text[start:].strip())
    return items if len(items) > 1 and all(items) else None


def extract_answer(text: str, truncated: bool = False) -> str | None:
    """The text of the final answer in a model's output, or None if it gives none (see math_answer.py)."""
    answer = locate_answer(text, truncated)
    return None if answer is None else answer.text


def _expected(row: dict) -> list[str]:
    if not isinstance(row, dict) or row.get("expected_answer") is None:
        raise UserError("row has no 'expected_answer'; the verifier needs it to score the output")
    try:
        return expected_answers(row["expected_answer"])
    except ValueError as exc:
        raise UserError(str(exc)) from None


def verify_math(output_text: str, row: dict, truncated: bool = False) -> dict[str, Any]:
    expected = _expected(row)
    letters = all(_LETTER_ANSWER_RE.fullmatch(e) and e.strip("()") in LETTERS for e in expected)
    answer = locate_answer(output_text, truncated, letters)
    reward = 1.0 if answer is not None and any(answers_match(e, answer) for e in expected) else 0.0
    return {"reward": reward, "extracted_answer": None if answer is None else answer.text}


def verify_exact(output_text: str, row: dict, truncated: bool = False) -> dict[str, Any]:
    expected = _expected(row)
    answer = output_text.strip()
    return {"reward": 1.0 if answer in expected else 0.0, "extracted_answer": answer}


_VERIFIERS: dict[str, Callable[..., dict[str, Any]]] = {"math": verify_math, "exact": verify_exact}


def is_truncated(response: Any) -> bool:
    """Whether a Responses object was cut off by the output token limit."""
    return isinstance(response, dict) and response.get("status") == "incomplete"


def verify(kind: str, output_text: str, row: dict, truncated: bool = False) -> dict[str, Any]:
    """Score `output_text` against the row: {"reward": 1.0 | 0.0, "extracted_answer": str | None}.
    `truncated`: the output was cut off by the token limit (see the module doc)."""
    try:
        fn = _VERIFIERS[kind]
    except KeyError:
        raise UserError(
            f"unknown verifier {kind!r}{did_you_mean(kind, VERIFIER_KINDS)}; "
            f"built-in verifiers: {', '.join(VERIFIER_KINDS)}"
        ) from None
    return fn(output_text, row, truncated)
