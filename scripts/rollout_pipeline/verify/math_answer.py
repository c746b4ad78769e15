"""Locate the final answer in a math output: after the reasoning, the last final answer, never digits out of LaTeX.

`locate_answer(text, truncated)` returns an `Answer` -- the text of the final answer and how to read it -- or None.
It only finds where the answer is (regular expressions, linear in the output); math-verify reads and compares it.

1. Reasoning is skipped: only the text after the last `</think>` counts; a `<think>` that never closes gave no answer.
2. A cut output (`truncated`) keeps only what it completed: up to its last line or sentence end, or its last closed
   box. Its trailing number is never taken: the 8 that ends a cut output may be the first digit of 85.
3. The last final answer wins: the last closed `\\boxed{}` / `\\fbox{}` (with the boxes of the same sentence, which
   math-verify reads together: `\\boxed{1} and \\boxed{2}` is the set {1, 2}, so hedging between two boxes matches
   neither), or the last "answer is X" / "Answer: X" / "#### X", whichever comes later. A statement that reads
   "the answer is 3 more than ..." states no answer, and neither does one retracted after it ("that is wrong").
4. Without any of these, the last item of the text: a LaTeX formula (`$...$`, `\\(...\\)`, `\\[...\\]`) or a number
   in plain prose -- never digits taken out of LaTeX (`\\frac{7}{2}`, `\\sqrt{3}`, `2^{10}`) or words (`AZ2`).
5. Multiple-choice: when every acceptable answer is a letter A-E, the letter of that answer ((B), \\boxed{B}, "the
   answer is C"), or failing any, the last option letter in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 200  # a stated answer runs to its sentence end, at most this far
LETTERS = "ABCDE"

_BOX_OPEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"[{}]")
# "the answer is X", "final answer: X", "**Answer:** X", "#### X" (GSM8K's reference solutions)
_STATEMENT_RE = re.compile(
    r"(?:\banswer\b(?:\s+(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be)\b|\**\s*[:=])|(?<!#)####(?!#))[\s:*]*",
    re.IGNORECASE,
)
# What joins two boxes into one answer: a short gap, in one sentence, with a connective or a hedge ("and", ",",
# "or maybe") and no word that replaces the first box with the second ("then", "wait", "actually", "instead").
_JOINED_RE = re.compile(
    r"\s*|(?=[^.!?\n]{0,40}$)(?![^.!?\n]*\b(?:then|wait|actually|instead|rather|reflection|no)\b)"
    r"[^.!?\n]*?(?:[,;&]|\b(?:and|or|maybe|perhaps|possibly|either)\b)[^.!?\n]*",
    re.IGNORECASE,
)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s)|\n")
# the stated answer: up to a sentence end (a period not followed by a digit), a line end, or MAX_ANSWER_CHARS
_STATED_RE = re.compile(r"(.{1,N}?)(?:\.(?!\d)|\n|[.!?]?\s*$)".replace("N", str(MAX_ANSWER_CHARS)), re.DOTALL)
# a number in plain prose: not glued to a word, a brace, a backslash, a sub/superscript or a slash before it, and
# not followed by a superscript, a subscript or a brace (letters after it are a unit: "12cm", "1,000.99m²")
_PROSE_NUMBER_RE = re.compile(
    r"(?<![\w.\\{}^_/,-])-?(?:(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+(?!\d)|\d+)(?:[.,]\d+)?|\.\d+)(?:/\d+)?(?![\d^_{}]|[.,/]\d)"
)
# Formulas: $$..$$ and \\[..\\] may span lines; inline $..$ and \\(..\\) may not (a number inside one broken over
# lines is in no formula and not in prose either). A dollar before a number and words is currency ("$18 a day and
# $20"), not a formula. Delimiters are paired in one pass, so unclosed ones cost nothing later; a formula is at most
# MAX_FORMULA_CHARS long.
MAX_FORMULA_CHARS = 2000
_DELIMITER_RE = re.compile(r"\\\$|\$\$|\\\[|\\\]|\\\(|\\\)|\$")
_CLOSER = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_CURRENCY_RE = re.compile(r"\d[\d,.]*\s+[A-Za-z]")
# "the answer is 3 more than x" states a relation, not an answer
_RELATION_RE = re.compile(
    r"-?[\d.,/]+\s*(?:more|less|fewer|greater|smaller|larger|bigger|higher|lower|times|than|"
    r"plus|minus|divided|multiplied)\b",
    re.IGNORECASE,
)
_RETRACTION_RE = re.compile(
    r"\b(?:(?:that|this|it|which|answer)(?:'s|\s+is|\s+was)\s+(?:wrong|incorrect|not\s+(?:right|correct))|"
    r"I\s+made\s+a\s+mistake|scratch\s+that|that\s+can'?t\s+be\s+right)\b",
    re.IGNORECASE,
)
_LEADING_NUMBER_RE = re.compile(
    r"[$€£]?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?)(?:\s*%|\s*[A-Za-z].*)?\s*$", re.DOTALL
)
_LEADING_FORMULA_RE = re.compile(r"(\$[^$]+\$|\\\(.+?\\\))(?:\s*[A-Za-z][^$]*)?$", re.DOTALL)
_WORDS_RE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_LETTER_RE = re.compile(r"^[\s$*(]*(?:\\text(?:bf)?\{\s*)?\(?([A-E])\)?(?![A-Za-z])")
_OPTION_RE = re.compile(r"\(([A-E])\)|^\s*\**([A-E])[.):]", re.MULTILINE)  # "(B)", or "B." opening a line
_BARE_LETTER_RE = re.compile(r"\b([B-E])\b(?!')")  # not A: "A" opens sentences


@dataclass(frozen=True)
class Answer:
    """The final answer's text, and how math-verify should read it: `region` (a stretch of the output with its
    boxes or formulas, read as math-verify reads an output), `latex` (a bare LaTeX answer, such as a box's
    content), `number` (a number from plain prose: a comma in it may be a decimal comma, as in 1,5) or `letter`
    (a multiple-choice letter)."""

    text: str
    kind: str


@dataclass(frozen=True)
class _Box:
    start: int
    end: int
    content: str


def after_reasoning(text: str) -> str:
    """The text after the model's reasoning: after the last `</think>`; empty when a `<think>` never closes."""
    end = text.rfind("</think>")
    if end >= 0:
        return text[end + len("</think>") :]
    return "" if "<think>" in text else text


def closed_boxes(text: str) -> list[_Box]:
    """Every complete \\boxed{...} / \\fbox{...} (nested braces balanced) in the order they open. One pass over the
    braces: linear even on \\boxed{ repeated ten thousand times without a closing brace."""
    openings = {match.end() - 1: match.start() for match in _BOX_OPEN_RE.finditer(text)}
    if not openings:
        return []
    found: list[_Box] = []
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            brace = stack.pop()
            if brace in openings:
                found.append(_Box(openings[brace], match.end(), text[brace + 1 : match.start()]))
    return sorted(found, key=lambda box: box.start)


def completed_part(text: str, boxes: list[_Box]) -> str:
    """What a cut output completed: up to its last line or sentence end, or to its last closed box if later."""
    last_end = 0
    for match in _SENTENCE_END_RE.finditer(text):
        last_end = match.end()
    if boxes:
        last_end = max(last_end, boxes[-1].end)
    return text[:last_end]


def _box_answer(text: str, boxes: list[_Box]) -> Answer:
    """The last box, with the boxes before it that one answer joins to it ("\\boxed{3} and \\boxed{5}", "\\boxed{2}
    or maybe \\boxed{3}"): math-verify reads those together, as a set. A box after other words ("\\boxed{1} then
    \\boxed{2}") replaces the earlier one."""
    first = len(boxes) - 1
    while first > 0 and _JOINED_RE.fullmatch(text, boxes[first - 1].end, boxes[first].start):
        first -= 1
    if first == len(boxes) - 1:
        return Answer(boxes[-1].content.strip(), "latex")
    return Answer(text[boxes[first].start : boxes[-1].end], "region")


def _statement_answer(stated: str) -> Answer | None:
    stated = stated.replace("**", "").strip().rstrip(".").strip()  # markdown bold: "**42**"
    if stated.count("{") > stated.count("}"):
        stated = _BOX_OPEN_RE.sub("", stated)  # a box the output never closed (cut off by max tokens)
    if not stated or _RELATION_RE.match(stated):
        return None
    formula = _LEADING_FORMULA_RE.match(stated)  # "$85$ apples"
    if formula:
        return Answer(formula.group(1), "region")
    if "$" in stated or "\\(" in stated or "\\[" in stated:
        return Answer(stated, "region")
    leading = _LEADING_NUMBER_RE.match(stated)  # "42 apples", "$12", "25%"
    if leading:
        return Answer(leading.group(1), "number")
    if _WORDS_RE.search(stated):  # "Jane started growing it 3 hours ago": the item in the prose
        return _last_item(stated, 0)
    return Answer(stated, "latex")


def _last_statement(text: str) -> tuple[int, int, Answer | None] | None:
    """(start, end, answer) of the last "answer is X"; answer None when it states no answer."""
    found = None
    for match in _STATEMENT_RE.finditer(text):
        found = match
    if found is None:
        return None
    stated = _STATED_RE.match(text, found.end())
    if stated is None:
        return found.start(), found.end(), None
    return found.start(), stated.end(), _statement_answer(stated.group(1))


def _formulas(text: str, start: int) -> list[tuple[int, int, bool]]:
    """(start, end, spans lines while inline) of every formula after `start`, in order: one pass over delimiters."""
    found: list[tuple[int, int, bool]] = []
    opener: re.Match | None = None
    for token in _DELIMITER_RE.finditer(text, start):
        mark = token.group()
        if mark == "\\$":
            continue  # an escaped dollar
        if opener is not None and token.start() - opener.end() > MAX_FORMULA_CHARS:
            opener = None  # never closed within reach
        if opener is None:
            if mark in _CLOSER and not (mark == "$" and _CURRENCY_RE.match(text, token.end())):
                opener = token
        elif mark == _CLOSER[opener.group()]:
            inline = opener.group() in ("$", "\\(")
            found.append((opener.start(), token.end(), inline and "\n" in text[opener.end() : token.start()]))
            opener = None
    return found


def _last_item(text: str, start: int) -> Answer | None:
    """The last LaTeX formula or plain-prose number after `start`, whichever ends later."""
    spans = _formulas(text, start)
    formula = next(((a, b) for a, b, broken in reversed(spans) if not broken), None)
    number = None
    span_index = 0
    for match in _PROSE_NUMBER_RE.finditer(text, start):
        while span_index < len(spans) and spans[span_index][1] <= match.start():
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= match.start():
            continue  # inside a formula: the formula is the item
        number = match
    if formula is not None and (number is None or formula[1] > number.end()):
        return Answer(text[formula[0] : formula[1]], "region")
    if number is not None:
        return Answer(number.group(0), "number")
    last_line = text[start:].strip().rpartition("\n")[2].strip()
    if last_line and len(last_line) <= MAX_ANSWER_CHARS and not _WORDS_RE.search(last_line):
        return Answer(last_line, "latex")  # a bare answer, such as \frac{10}{9}
    return None


def _letter(answer: Answer | None, text: str, start: int, fallback: bool) -> Answer | None:
    if answer is not None:
        if answer.kind == "region" and len(_BOX_OPEN_RE.findall(answer.text)) > 1:
            return answer  # several boxes: a hedge between options is no option
        content = re.sub(r"\\boxed\s*\{|\\fbox\s*\{", "", answer.text)
        match = _LETTER_RE.match(content)
        return Answer(match.group(1), "letter") if match else answer
    if not fallback:
        return None
    last = None
    for match in _OPTION_RE.finditer(text, start):
        last = match
    if last is None:
        for match in _BARE_LETTER_RE.finditer(text, start):
            last = match
    return Answer(next(g for g in last.groups() if g), "letter") if last else None


def locate_answer(output: str, truncated: bool = False, letters: bool = False) -> Answer | None:
    """The final answer in a model's output (see the module doc), or None if it gives none. `letters`: the
    acceptable answers are multiple-choice letters."""
    text = after_reasoning(output)
    boxes = closed_boxes(text)
    if truncated:
        text = completed_part(text, boxes)
    statement = _last_statement(text)
    answer: Answer | None
    if boxes and (statement is None or boxes[-1].start >= statement[0]):
        answer, end = _box_answer(text, boxes), boxes[-1].end
    elif statement is not None:
        _, end, answer = statement
    else:
        answer, end = None, 0
    if answer is not None and _RETRACTION_RE.search(text, end):
        return None  # retracted, with no later answer
    if answer is None and not truncated:
        # no answer stated, or a statement that states none: the last item after it
        after = end if statement is not None or boxes else 0
        answer = None if letters else _last_item(text, after)
        if letters:
            return _letter(None, text, after, True)
    return _letter(answer, text, 0, False) if letters else answer
