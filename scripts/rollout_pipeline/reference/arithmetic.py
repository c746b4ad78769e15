"""Integer arithmetic expressions (+, -, ×, parentheses): find one in a prompt, parse it, list its steps.

Used by the reference policy (to work a prompt out) and by the prompt generator (to write one).
Division is deliberately absent: mistakes propagated through a division would give fractions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Operator spellings people (and LLM prompts) use, mapped to the three canonical ones.
_OP_ALIASES = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "×", "×": "×", "·": "×", "⋅": "×"}
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b}
_PRECEDENCE = {"+": 1, "-": 1, "×": 2}

# Limits keep a hostile prompt from costing more than a few microseconds.
MAX_OPS = 8
MAX_DIGITS = 12
MAX_SCAN_CHARS = 20_000  # the expression must appear this early in the prompt

# A run of characters that can form an expression; it must start and end like an operand. The run
# is bounded so a hostile prompt (say, 100 kB of "- - - -") cannot make the scan quadratic.
_EXPR_RE = re.compile(r"[\d(\-−–][\d\s+\-−–*×·⋅()]{0,400}[\d)]")
_TOKEN_RE = re.compile(r"\s*(?:(\d+)|(.))")


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Node
    right: Node


Node = Num | BinOp


@dataclass(frozen=True)
class Step:
    """One binary operation in evaluation order; an operand is a literal int or ('step', index)."""

    op: str
    left: int | tuple[str, int]
    right: int | tuple[str, int]


def _tokens(text: str) -> list[str | int]:
    out: list[str | int] = []
    for number, other in _TOKEN_RE.findall(text):
        if number:
            if len(number) > MAX_DIGITS:
                raise ValueError("number too long")
            out.append(int(number))
        elif other.strip():
            out.append(_OP_ALIASES.get(other, other))
    return out


class _Parser:
    """Recursive descent with the usual precedence; unary minus only directly on a number."""

    def __init__(self, tokens: list[str | int]):
        self.tokens = tokens
        self.pos = 0
        self.ops = 0

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | int | None:
        token = self.peek()
        self.pos += 1
        return token

    def expression(self, min_prec: int = 1) -> Node:
        left = self.atom()
        while True:
            op = self.peek()
            if not isinstance(op, str) or op not in _PRECEDENCE or _PRECEDENCE[op] < min_prec:
                return left
            self.take()
            self.ops += 1
            if self.ops > MAX_OPS:
                raise ValueError("too many operations")
            right = self.expression(_PRECEDENCE[op] + 1)
            left = BinOp(op, left, right)

    def atom(self) -> Node:
        token = self.take()
        if isinstance(token, int):
            return Num(token)
        if token == "-" and isinstance(self.peek(), int):
            return Num(-int(self.take()))  # type: ignore[arg-type]
        if token == "(":
            inner = self.expression()
            if self.take() != ")":
                raise ValueError("unbalanced parentheses")
            return inner
        raise ValueError(f"unexpected {token!r}")


def parse_expression(text: str) -> Node:
    """Parse an expression such as `(48 + 17) × 6 - 125`; raises ValueError if it is not one."""
    parser = _Parser(_tokens(text))
    node = parser.expression()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    return node


def find_expression(prompt_text: str) -> Node | None:
    """The first expression with at least one operation in the prompt (within MAX_SCAN_CHARS), or None."""
    for match in _EXPR_RE.finditer(prompt_text, 0, MAX_SCAN_CHARS):
        text = match.group(0)
        # Prose around an expression can leave a stray bracket at either end: try without it.
        for attempt in (text, text.lstrip("("), text.rstrip(")"), text.strip("()")):
            try:
                node = parse_expression(attempt)
            except ValueError:
                continue
            if isinstance(node, BinOp):
                return node
    return None


def steps(node: Node) -> list[Step]:
    """The operations in the order a person works them out (post-order)."""
    out: list[Step] = []

    def visit(n: Node) -> int | tuple[str, int]:
        if isinstance(n, Num):
            return n.value
        left = visit(n.left)
        right = visit(n.right)
        out.append(Step(n.op, left, right))
        return ("step", len(out) - 1)

    visit(node)
    return out


def evaluate(node: Node) -> int:
    if isinstance(node, Num):
        return node.value
    return OPS[node.op](evaluate(node.left), evaluate(node.right))


def format_number(value: int) -> str:
    """An operand as written in a worked step: negatives in parentheses so `5 - (-3)` stays readable."""
    return f"({value})" if value < 0 else str(value)


def format_expression(node: Node) -> str:
    """Render with the fewest parentheses that keep the same tree."""
    if isinstance(node, Num):
        return format_number(node.value)
    prec = _PRECEDENCE[node.op]

    def side(child: Node, right: bool) -> str:
        text = format_expression(child)
        if isinstance(child, BinOp):
            child_prec = _PRECEDENCE[child.op]
            # The right side of '-' needs brackets at equal precedence: a - (b + c) != a - b + c.
            if child_prec < prec or (right and child_prec == prec and node.op == "-"):
                return f"({text})"
        return text

    return f"{side(node.left, False)} {node.op} {side(node.right, True)}"
