"""Verifiers shared by the collector and the embedded server's /run and /verify.

`verify(kind, output_text, row)` -> at least {"reward": float, "extracted_answer": str | None}.

- `math`: extract the final answer -- the last `\\boxed{...}` first, then the last
  "answer is X", then the last number in the text -- and compare it with `row["expected_answer"]`.
  An output cut off by the token limit (`truncated`) counts only an answer completed before the cut:
  a closed box, or "answer is X" followed by more text. Its last number, or an "answer is 8" that
  ends the text, may be the first digit of 85, and a policy must not learn to be rewarded for that.
  Numbers (integers, decimals, fractions like 3/4, with thousands separators) compare by exact
  value; only when either side is not a plain number is math-verify used (imported lazily: it
  costs ~0.4 s to import and most answers never need it).
- `exact`: the stripped output equals the stripped expected answer.

Reward is 1.0 or 0.0. A row without `expected_answer` is a UserError (a data problem, not a
wrong answer: scoring it 0 would silently poison the rollouts).
"""
from __future__ import annotations

import re
import threading
from fractions import Fraction
from typing import Any, Callable

from rollout_pipeline.errors import UserError, did_you_mean

VERIFIER_KINDS = ("math", "exact")

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# The stated answer is at most 200 characters: an unbounded lazy match rescans the rest of a long line for each
# "answer is" in it (quadratic on a degenerate output).
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*:?\s*(.{1,200}?)(?:\.\s|\.?$|\n)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LEADING_NUMBER_RE = re.compile(r"(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)(?:\s+[A-Za-z].*)?$")
_PLAIN_INT_RE = re.compile(r"-?[0-9]{1,300}")  # bounded: int() refuses over 4300 digits
_NUMERIC_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?")


_BRACE_RE = re.compile(r"[{}]")


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete \\boxed{...} (nested braces balanced), in the order the boxes open;
    unterminated ones are skipped. One pass over the braces: linear even in a degenerate output such as
    \\boxed{ repeated ten thousand times without a closing brace."""
    box_braces = {match.end() - 1 for match in _BOXED_RE.finditer(text)}
    if not box_braces:
        return []
    found: list[tuple[int, str]] = []
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            start = stack.pop()
            if start in box_braces:
                found.append((start, text[start + 1:match.start()]))
    return [content for _, content in sorted(found)]


def extract_answer(text: str, truncated: bool = False) -> str | None:
    """The final answer in a model's output, or None if it gives none (see the module doc for `truncated`)."""
    boxed = [b.strip() for b in _boxed_contents(text) if b.strip()]
    if boxed:
        return boxed[-1]
    stated = [m.group(1) for m in _ANSWER_IS_RE.finditer(text) if not truncated or m.end() < len(text)]
    if stated:
        answer = _BOXED_RE.sub("", stated[-1]).strip().strip("$ ").rstrip(".")  # a box cut off by max tokens
        leading = _LEADING_NUMBER_RE.match(answer)
        # "the answer is 42 apples" -> 42; "the answer is x + 1" -> x + 1
        if leading:
            return leading.group(1).replace(",", "")
        if answer:
            return answer
    if truncated:
        return None
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def as_number(text: str) -> Fraction | int | None:
    """Exact value of a plain numeric answer ('1,234', '-0.50', '3/4', '$12', '85.'), else None."""
    if _PLAIN_INT_RE.fullmatch(text):
        return int(text)  # the common case, without the cost of a Fraction (equal to it in comparisons)
    cleaned = text.strip().strip("$").replace(",", "").replace("\\!", "").replace(" ", "").rstrip(".")
    if cleaned.startswith("\\$"):
        cleaned = cleaned[2:]
    if not _NUMERIC_RE.fullmatch(cleaned):
        return None
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


MAX_MATH_VERIFY_CHARS = 1000  # longer answers are compared as text: math-verify's parser is not linear


def _math_verify_equal(expected: str, answer: str) -> bool:
    if len(expected) > MAX_MATH_VERIFY_CHARS or len(answer) > MAX_MATH_VERIFY_CHARS:
        return " ".join(expected.split()) == " ".join(answer.split())
    import logging

    from math_verify import parse, verify as mv_verify  # lazy: ~0.4 s import
    # Its timeout warnings print the whole expression; a timeout here is just a non-match.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    # math-verify times out with signal.alarm, which only works on the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(f"${expected}$", parsing_timeout=timeout)
    pred = parse(f"${answer}$", parsing_timeout=timeout)
    if not gold or not pred:
        return " ".join(expected.split()) == " ".join(answer.split())
    return bool(mv_verify(gold, pred, timeout_seconds=timeout))


def answers_match(expected: str, answer: str) -> bool:
    """Numeric equality when both are numbers, math-verify otherwise."""
    if expected == answer:
        return True  # what the checks below would conclude, at the cost of one comparison
    a, b = as_number(expected), as_number(answer)
    if a is not None and b is not None:
        return a == b
    if " ".join(expected.split()) == " ".join(answer.split()):
        return True
    return _math_verify_equal(expected, answer)


def _expected(row: dict) -> str:
    if not isinstance(row, dict) or row.get("expected_answer") is None:
        raise UserError("row has no 'expected_answer'; the verifier needs it to score the output")
    value = row["expected_answer"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return str(value).strip()


def verify_math(output_text: str, row: dict, truncated: bool = False) -> dict[str, Any]:
    expected = _expected(row)
    answer = extract_answer(output_text, truncated)
    reward = 1.0 if answer is not None and answers_match(expected, answer) else 0.0
    return {"reward": reward, "extracted_answer": answer}


def verify_exact(output_text: str, row: dict, truncated: bool = False) -> dict[str, Any]:
    expected = _expected(row)
    answer = output_text.strip()
    return {"reward": 1.0 if answer == expected else 0.0, "extracted_answer": answer}


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
        raise UserError(f"unknown verifier {kind!r}{did_you_mean(kind, VERIFIER_KINDS)}; "
                        f"built-in verifiers: {', '.join(VERIFIER_KINDS)}") from None
    return fn(output_text, row, truncated)
