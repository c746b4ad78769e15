"""Verifiers that misbehave on some outputs (module:function verifiers for the reliability suite).

Each scores like the math verifier, except on the rollouts `_unlucky` picks (about a third, by a hash of the
output and row, so the same rollout is unlucky on every retry), where it raises or returns a non-reward.
"""

from __future__ import annotations

import hashlib

from rollout_pipeline.verify.verifiers import verify


def _unlucky(row: dict, output: str) -> bool:
    return hashlib.sha256(f"{row.get('task_id')}|{output}".encode()).digest()[0] % 3 == 0


def _score(row: dict, output: str, bad):
    return bad() if _unlucky(row, output) else verify("math", output, row)


def math_in_a_worker(row, output, response):
    return verify("math", output, row)


def raises(row, output, response):
    def bad():
        raise KeyError("expected_answer_v2")

    return _score(row, output, bad)


def returns_nan(row, output, response):
    return _score(row, output, lambda: float("nan"))


def returns_none(row, output, response):
    return _score(row, output, lambda: None)


def returns_string(row, output, response):
    return _score(row, output, lambda: {"reward": "1.0"})


def spins(row, output, response):
    def bad():
        while True:  # a verifier stuck in a loop: only killing its process stops it
            pass

    return _score(row, output, bad)


async def async_raises(row, output, response):
    return raises(row, output, response)


def prints(row, output, response):
    print(f"verifier debug: scoring {output[:20]!r}")  # what a verifier under development does
    return verify("math", output, row)


# -- verdicts that are never a reward, on every output (the verifier contract) ----------------------------------
def always_none(row, output, response):
    return None  # an LLM judge that could not parse the output


def always_nan(row, output, response):
    return float("nan")


def always_inf(row, output, response):
    return {"reward": float("inf")}


def always_bool(row, output, response):
    return True


def always_string_with_escapes(row, output, response):
    return "\x1b[31m1.0\x1b[0m"  # terminal escapes: never printed raw


def always_raises(row, output, response):
    raise ValueError("judge reply unparseable")


def extras_set(row, output, response):
    return {"reward": 1.0, "tags": {"boxed", "numeric"}}


def extras_big_int(row, output, response):
    return {"reward": 1.0, "steps": 2**70}


def extras_int_keys(row, output, response):
    return {"reward": 1.0, "by_step": {1: 0.5, 2: 1.0}}


def huge_reward(row, output, response):
    return 1e308  # sums of two overflow to inf


async def awaits_forever(row, output, response):
    import asyncio

    await asyncio.Event().wait()
