"""Deterministic arithmetic prompt sets in NeMo Gym's canonical row format.

    {"responses_create_params": {"input": [{"role": "user", "content": "What is 37 + 48? Give the final answer in \\boxed{}."}]},
     "expected_answer": "85", "task_id": "arith-1f0c9a2b7d3e", "difficulty": "easy"}

tiny: a sum of two digits, asked for the number alone ("What is 3 + 4? Answer with just the number."): SmolLM2-135M
gets about one in eight right, which leaves the real-model RL demo something to learn.
easy: one operation (+, -, ×) on small numbers. hard: two or three operations on larger numbers,
worked left to right (brackets written where precedence needs them). mixed: each row easy or hard
with equal chance. Rows within a set are distinct; `task_id` is a hash of the prompt text, so it is
stable across runs and sets and unique per prompt content. Same (count, difficulty, seed) ->
byte-identical output (only `random.Random(int)` draws, no hash randomization, no clock).
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import write_jsonl

DIFFICULTIES = ("tiny", "easy", "hard", "mixed")
PROMPT_TEMPLATE = "What is {expression}? Give the final answer in \\boxed{{}}."
TINY_TEMPLATE = "What is {expression}? Answer with just the number."
_MAX_TRIES = 1000  # consecutive duplicate draws before we conclude the space is exhausted


def prompt_for(expression: str, level: str = "easy") -> str:
    """The prompt text for an expression such as `(48 + 17) × 6 - 125` of that difficulty."""
    return (TINY_TEMPLATE if level == "tiny" else PROMPT_TEMPLATE).format(expression=expression)


def task_id_for(prompt_text: str) -> str:
    """Stable id derived from the prompt content."""
    return "arith-" + hashlib.sha256(prompt_text.encode("utf-8")).hexdigest()[:12]


def tiny_expression(rng: random.Random) -> tuple[str, int]:
    """A sum of two digits: (expression text, value)."""
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return f"{a} + {b}", a + b


def easy_expression(rng: random.Random) -> tuple[str, int]:
    """One operation on small numbers: (expression text, value)."""
    op = rng.choice("+-×")
    if op == "+":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return f"{a} + {b}", a + b
    if op == "-":
        a = rng.randint(11, 99)
        b = rng.randint(2, a - 1)
        return f"{a} - {b}", a - b
    a, b = rng.randint(11, 49), rng.randint(2, 9)
    if rng.random() < 0.5:
        a, b = b, a
    return f"{a} × {b}", a * b


def hard_expression(rng: random.Random) -> tuple[str, int]:
    """Two or three operations on larger numbers, worked left to right: (expression text, value)."""
    value = rng.randint(12, 99)
    text, top_op = str(value), None  # top_op: the outermost operator of `text`, for bracketing
    for _ in range(rng.choice((2, 3))):
        op = rng.choice("+-×")
        if op == "-" and value < 20:
            op = "+"  # keep intermediate results positive and subtractions non-trivial
        if op == "+":
            b = rng.randint(12, 999)
            text, value = f"{text} + {b}", value + b
        elif op == "-":
            b = rng.randint(11, value - 1)
            text, value = f"{text} - {b}", value - b
        else:
            b = rng.randint(3, 9) if value > 200 else rng.randint(3, 19)
            left = f"({text})" if top_op in ("+", "-") else text
            text, value = f"{left} × {b}", value * b
        top_op = op
    return text, value


_EXPRESSIONS = {"tiny": tiny_expression, "easy": easy_expression, "hard": hard_expression}


def generate_rows(count: int, difficulty: str, seed: int) -> list[dict[str, Any]]:
    """`count` distinct prompt rows; UserError if the difficulty has fewer distinct prompts than that."""
    if difficulty not in DIFFICULTIES:
        raise UserError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if count < 1:
        raise UserError(f"count must be >= 1, got {count}")
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < count:
        for _ in range(_MAX_TRIES):
            level = difficulty if difficulty != "mixed" else rng.choice(("easy", "hard"))
            expression, value = _EXPRESSIONS[level](rng)
            text = prompt_for(expression, level)
            if text not in seen:
                break
        else:
            raise UserError(f"could only make {len(rows)} distinct {difficulty} prompts, {count} were asked for")
        seen.add(text)
        rows.append(
            {
                "responses_create_params": {"input": [{"role": "user", "content": text}]},
                "expected_answer": str(value),
                "task_id": task_id_for(text),
                "difficulty": level,
            }
        )
    return rows


def write_prompt_set(path: str | os.PathLike, count: int, difficulty: str, seed: int) -> int:
    """Generate and atomically write one prompt set; returns the number of rows."""
    return write_jsonl(path, generate_rows(count, difficulty, seed))
