"""The reference policy: a small, honest sampler for arithmetic prompts. It is NOT a language model.

It exists so the whole pipeline (collect, filter, pair, metrics, RL) runs offline with a
policy whose behaviour is known exactly. For a prompt containing an integer expression
(+, -, ×, parentheses) it builds a few candidate worked answers, one per *kind*:

    correct           every step right, ends in \\boxed{answer}
    off_by_one        the last step's result is off by one
    carry_slip        a dropped carry / forgotten borrow in the first step that has one
    swapped_operands  the first subtraction written the other way round (b - a)
    wrong_operation   the first step uses the wrong operator (+ <-> -, × -> +)
    no_answer         gives up without a final answer (and without any number)

A kind that does not apply to a prompt (no subtraction to swap, no carry to drop) is not a
candidate for it; neither is a kind whose text would be identical to an earlier kind's, so
every candidate text names exactly one kind (see `classify_output`).

Each candidate kind has a logit in the checkpoint, per difficulty class (`easy` = one
operation, `hard` = two or more). Sampling: temperature 0 is greedy (ties go to the earlier
kind above); otherwise softmax(logits / T) over the applicable kinds, then top_p nucleus
truncation (the smallest set of most likely kinds whose mass reaches top_p, renormalized).
A seed makes a draw reproducible (the RNG is seeded with the seed and the prompt text, and choice k of n
with seed + k, as vLLM does; so
different prompts under one seed are still independent); without a seed draws are fresh.
`max_tokens` cuts the text (token rule in `tokens.py`), which drops the final answer.

The prompt text the policy reads is the last user message (`prompt_text`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from rollout_pipeline.reference import arithmetic
from rollout_pipeline.reference.tokens import token_ends


class CheckpointLike(Protocol):
    """What sampling needs of a checkpoint (checkpoints.py defines the file format; it depends on this module,
    never the other way round)."""

    sampling_cache: dict

    def logits(self, difficulty: str) -> dict[str, float]: ...


CANDIDATE_KINDS: tuple[str, ...] = (
    "correct",
    "off_by_one",
    "carry_slip",
    "swapped_operands",
    "wrong_operation",
    "no_answer",
)
DIFFICULTY_CLASSES: tuple[str, ...] = ("easy", "hard")

NO_ANSWER_TEXT = (
    "I need to work this out carefully, but I am not confident in my arithmetic here, "
    "so I will not give a final answer."
)
NOT_ARITHMETIC_TEXT = (
    "I am a reference policy for arithmetic problems, and I could not find an arithmetic "
    "expression (integers with +, - and ×) in this prompt, so I cannot answer it. "
    "Please ask something like: What is 37 + 48?"
)


@dataclass(frozen=True)
class Candidate:
    kind: str
    text: str
    answer: int | None
    ends: tuple[int, ...]  # token end offsets, for cheap truncation


@dataclass(frozen=True)
class Problem:
    difficulty: str
    answer: int
    candidates: tuple[Candidate, ...]  # applicable kinds, in CANDIDATE_KINDS order


@dataclass(frozen=True)
class Sample:
    """One drawn answer. `kind` is None for the polite non-answer to a non-arithmetic prompt."""

    kind: str | None
    text: str
    output_tokens: int
    truncated: bool


def candidate_kinds() -> tuple[str, ...]:
    """Every candidate kind, in the order used for ties and for checkpoint classes."""
    return CANDIDATE_KINDS


def prompt_text(messages: Iterable[Mapping]) -> str:
    """The text the policy answers: the last user message (or the last message if none is 'user')."""
    messages = list(messages)
    for message in reversed(messages):
        if message.get("role", "user") == "user":
            return str(message.get("content") or "")
    return str(messages[-1].get("content") or "") if messages else ""


# ---- candidate construction ------------------------------------------------------------------


def _carry_slip(left: int, op: str, right: int) -> int | None:
    """The result with the lowest carry (or borrow) dropped, or None when the step has none."""
    if op == "+" and left >= 0 and right >= 0:
        carry, place, a, b = 0, 1, left, right
        while a or b:
            if a % 10 + b % 10 + carry >= 10:
                return left + right - place * 10
            carry = (a % 10 + b % 10 + carry) // 10
            a, b, place = a // 10, b // 10, place * 10
        return None
    if op == "-" and left >= right >= 0:
        place, a, b = 1, left, right
        while b:
            if a % 10 < b % 10:
                return left - right + place * 10  # borrowed, but did not reduce the next digit
            a, b, place = a // 10, b // 10, place * 10
        return None
    if op == "×" and left >= 0 and right >= 0:
        big, digit = (left, right) if right < 10 else (right, left)
        if digit >= 10 or big < 10:
            return None  # only long multiplication by one digit has a single carry to drop
        carry, place, a = 0, 1, big
        while a:
            partial = (a % 10) * digit + carry
            if partial >= 10 and a >= 10:
                return left * right - (partial // 10) * place * 10
            carry = partial // 10
            a, place = a // 10, place * 10
        return None
    return None


def _work(plan: list[arithmetic.Step], tweak_at: int | None = None, tweak=None) -> list[tuple[int, str, int, int]]:
    """Run the steps; at step `tweak_at`, `tweak(l, op, r)` returns the (l, op, r, value) written instead."""
    rows: list[tuple[int, str, int, int]] = []
    for index, step in enumerate(plan):
        left = rows[step.left[1]][3] if isinstance(step.left, tuple) else step.left
        right = rows[step.right[1]][3] if isinstance(step.right, tuple) else step.right
        if index == tweak_at:
            rows.append(tweak(left, step.op, right))
        else:
            rows.append((left, step.op, right, arithmetic.OPS[step.op](left, right)))
    return rows


def _render(rows: list[tuple[int, str, int, int]]) -> tuple[str, int]:
    fmt = arithmetic.format_number
    lines = [f"{fmt(left)} {op} {fmt(right)} = {v}." for left, op, right, v in rows]
    if len(lines) > 1:
        lines = [f"Step {i}: {line}" for i, line in enumerate(lines, start=1)]
    answer = rows[-1][3]
    lines.append(f"The final answer is \\boxed{{{answer}}}.")
    return "\n".join(lines), answer


def _first(rows: list[tuple[int, str, int, int]], test) -> int | None:
    """Index of the first worked step (left, op, right) that passes `test`."""
    for index, (left, op, right, _) in enumerate(rows):
        if test(left, op, right):
            return index
    return None


def _build_candidates(plan: list[arithmetic.Step]) -> list[tuple[str, str, int | None]]:
    correct_rows = _work(plan)
    answer = correct_rows[-1][3]
    out: list[tuple[str, str, int | None]] = [("correct", *_render(correct_rows))]

    # Off by one: the direction is fixed per problem so the text is a function of the prompt.
    delta = 1 if answer % 2 == 0 else -1
    last = len(plan) - 1
    out.append(
        (
            "off_by_one",
            *_render(
                _work(plan, last, lambda left, op, right: (left, op, right, arithmetic.OPS[op](left, right) + delta))
            ),
        )
    )

    # A slip is looked for on the correct intermediate values, in working order.
    slip_at = _first(correct_rows, lambda left, op, right: _carry_slip(left, op, right) is not None)
    if slip_at is not None:
        out.append(
            (
                "carry_slip",
                *_render(_work(plan, slip_at, lambda left, op, right: (left, op, right, _carry_slip(left, op, right)))),
            )
        )

    swap_at = _first(correct_rows, lambda left, op, right: op == "-" and left != right)
    if swap_at is not None:
        out.append(
            (
                "swapped_operands",
                *_render(_work(plan, swap_at, lambda left, op, right: (right, op, left, right - left))),
            )
        )

    wrong = {"+": "-", "-": "+", "×": "+"}
    out.append(
        (
            "wrong_operation",
            *_render(
                _work(plan, 0, lambda left, op, right: (left, wrong[op], right, arithmetic.OPS[wrong[op]](left, right)))
            ),
        )
    )
    out.append(("no_answer", NO_ANSWER_TEXT, None))
    return out


@lru_cache(maxsize=65536)
def parse_problem(text: str) -> Problem | None:
    """The problem in a prompt with its applicable candidates, or None if the prompt has no expression."""
    node = arithmetic.find_expression(text)
    if node is None:
        return None
    plan = arithmetic.steps(node)
    seen: set[str] = set()
    candidates = []
    for kind, body, answer in _build_candidates(plan):
        if body in seen:
            continue  # same text as an earlier kind: keep the text -> kind map one-to-one
        seen.add(body)
        candidates.append(Candidate(kind, body, answer, tuple(token_ends(body))))
    difficulty = "easy" if len(plan) == 1 else "hard"
    return Problem(difficulty, arithmetic.evaluate(node), tuple(candidates))


def difficulty_class(prompt: str) -> str:
    """'easy' (one operation) or 'hard' (two or more); ValueError if the prompt has no expression."""
    problem = parse_problem(prompt)
    if problem is None:
        raise ValueError("not an arithmetic prompt")
    return problem.difficulty


def applicable_kinds(prompt: str) -> tuple[str, ...]:
    """The kinds that are candidates for this prompt (empty if it has no expression)."""
    problem = parse_problem(prompt)
    return tuple(c.kind for c in problem.candidates) if problem else ()


def candidate_texts(prompt: str) -> dict[str, str]:
    """kind -> full answer text, for the applicable kinds."""
    problem = parse_problem(prompt)
    return {c.kind: c.text for c in problem.candidates} if problem else {}


def classify_output(prompt: str, output_text: str) -> str | None:
    """Which candidate kind produced `output_text` for `prompt`.

    An exact match names the kind; a truncated text names it only if it is a prefix of exactly
    one candidate. None for foreign text, ambiguous prefixes and non-arithmetic prompts.
    """
    problem = parse_problem(prompt)
    if problem is None:
        return None
    prefix_of = []
    for candidate in problem.candidates:
        if candidate.text == output_text:
            return candidate.kind
        if output_text and candidate.text.startswith(output_text):
            prefix_of.append(candidate.kind)
    return prefix_of[0] if len(prefix_of) == 1 else None


# ---- sampling -------------------------------------------------------------------------------


def _distribution(
    logits: Mapping[str, float], kinds: tuple[str, ...], temperature: float, top_p: float
) -> list[tuple[str, float]]:
    """[(kind, probability)] with nonzero probabilities, most likely first."""
    if temperature == 0:
        best = max(kinds, key=lambda k: (logits[k], -kinds.index(k)))
        return [(best, 1.0)]
    scaled = [logits[k] / temperature for k in kinds]
    top = max(scaled)
    weights = [math.exp(s - top) for s in scaled]
    total = sum(weights)
    # Stable sort: equal probabilities keep CANDIDATE_KINDS order, so truncation is deterministic.
    ranked = sorted(zip(kinds, (w / total for w in weights)), key=lambda kp: -kp[1])
    if top_p < 1.0:
        kept, mass = [], 0.0
        for kind, p in ranked:
            kept.append((kind, p))
            mass += p
            if mass >= top_p - 1e-12:
                break
        ranked = [(kind, p / mass) for kind, p in kept]
    return ranked


def candidate_probabilities(
    prompt: str, checkpoint: CheckpointLike, temperature: float, top_p: float = 1.0
) -> dict[str, float]:
    """Probability of each applicable kind for `prompt` under `checkpoint` (0 for kinds cut by top_p).

    Empty for a prompt without an arithmetic expression. Temperature 0 puts all mass on the argmax.
    """
    problem = parse_problem(prompt)
    if problem is None:
        return {}
    kinds = tuple(c.kind for c in problem.candidates)
    dist = dict(_distribution(checkpoint.logits(problem.difficulty), kinds, temperature, top_p))
    return {kind: dist.get(kind, 0.0) for kind in kinds}


def score_function(prompt: str, kind: str, checkpoint: CheckpointLike, temperature: float) -> dict[str, float]:
    """Gradient of log p(kind | prompt) with respect to the logits of the prompt's difficulty class.

    p is softmax(logits / T) over the applicable kinds (top_p truncation is ignored, as usual for
    policy gradients): d log p(k) / d logit_j = (1[j == k] - p_j) / T; kinds that do not apply get 0.
    A REINFORCE trainer adds lr * advantage * this to `checkpoint.classes[difficulty_class(prompt)]`.
    """
    if temperature <= 0:
        raise ValueError("the score function needs a temperature > 0 (greedy decoding has no gradient)")
    probs = candidate_probabilities(prompt, checkpoint, temperature, 1.0)
    if kind not in probs:
        raise ValueError(f"{kind!r} is not a candidate kind for this prompt; candidates: {', '.join(probs) or 'none'}")
    return {j: ((1.0 if j == kind else 0.0) - p) / temperature for j, p in probs.items()}


def _cumulative(
    checkpoint: CheckpointLike, problem: Problem, temperature: float, top_p: float
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(candidate indices, cumulative probabilities), memoized on the checkpoint object."""
    key = (problem.difficulty, tuple(c.kind for c in problem.candidates), temperature, top_p)
    cached = checkpoint.sampling_cache.get(key)
    if cached is None:
        kinds = key[1]
        ranked = _distribution(checkpoint.logits(problem.difficulty), kinds, temperature, top_p)
        indices, cumulative, mass = [], [], 0.0
        for kind, p in ranked:
            mass += p
            indices.append(kinds.index(kind))
            cumulative.append(mass)
        cumulative[-1] = 1.0  # rounding must never let a draw fall off the end
        if len(checkpoint.sampling_cache) > 4096:
            checkpoint.sampling_cache.clear()
        cached = checkpoint.sampling_cache[key] = (tuple(indices), tuple(cumulative))
    return cached


_fresh_rng = random.Random()  # unseeded requests: seeded from OS entropy once per process


def _cut(text: str, ends: tuple[int, ...] | list[int], max_tokens: int | None) -> tuple[str, int, bool]:
    if max_tokens is None or len(ends) <= max_tokens:
        return text, len(ends), False
    return text[: ends[max_tokens - 1]], max_tokens, True


def sample(
    prompt: str,
    checkpoint: CheckpointLike,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int | None = None,
    max_tokens: int | None = None,
) -> list[Sample]:
    """Draw `n` independent answers to `prompt`. Same (prompt, seed, settings, checkpoint) -> same answers."""
    problem = parse_problem(prompt)
    if problem is None:
        text, count, cut = _cut(NOT_ARITHMETIC_TEXT, token_ends(NOT_ARITHMETIC_TEXT), max_tokens)
        return [Sample(None, text, count, cut) for _ in range(n)]
    indices, cumulative = _cumulative(checkpoint, problem, temperature, top_p)
    out = []
    for choice in range(n):
        # Choice k of a request seeded S draws as a request of its own seeded S + k, as vLLM does: a record that
        # says its seed is S + k is then reproduced by that seed alone.
        u = (_fresh_rng if seed is None else random.Random(f"{seed + choice}\x1f{prompt}")).random()
        pick = indices[-1]
        for index, bound in zip(indices, cumulative):
            if u < bound:
                pick = index
                break
        candidate = problem.candidates[pick]
        text, count, cut = _cut(candidate.text, candidate.ends, max_tokens)
        out.append(Sample(candidate.kind, text, count, cut))
    return out
