"""The adaptive curriculum: iteration k's prompts chosen from a pool by the pass rates measured in iteration k-1.

With `rl.schedule.curriculum_mode: adaptive`, `make rl-iter` writes for each new iteration NNN an entry of
rl.selections (pool, the rollouts that measured pass rates, the previous selection's state, size, band, seed), and
the stage rl_select@NNN chooses:

  1. keep the prompts of iteration k-1 whose measured pass rate is in the band [low, high] (both included); drop the
     ones below (unsolved, too hard) and above (solved, too easy): their groups carry no group-relative signal;
  2. refill up to `size` from the pool: prompts never profiled first, then prompts profiled earlier whose last pass
     rate was in the band, then the rest by their distance to the band; within each, in the order of a seeded hash
     of the prompt id (deterministic given the seed, and independent of the pool's order).

Outputs: data/rl/curriculum/iter_NNN.jsonl (the chosen pool rows, in pool order: the collect's input),
data/rl/curriculum/iter_NNN.state.json (the chosen ids and every profiled prompt's last pass rate, which the next
selection reads) and metrics/rl/curriculum_NNN.json (the counts). Iteration 001 has no previous iteration: with
`adaptive.initial_rollouts` (a profiling run of checkpoint 000, such as the rl objective's rollouts of the reference
checkpoint) its `measured` names that file, and every prompt it measured in the band is a candidate to keep; without,
`measured` names the pool itself and it draws `size` prompts from the pool by the seeded order. Its `state` is the pool.
Memory: the pool's ids and the profiled prompts' pass rates (bounded by the pool); rollouts and rows stream.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rollout_pipeline import paths
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import iter_jsonl, write_json, write_jsonl
from rollout_pipeline.rows import normalize_row, prompt_id
from rollout_pipeline.stages.groups import iter_groups

CURRICULUM_DIR = paths.CURRICULUM_DIR
FIRST = "001"


def prompts_path(key: str) -> Path:
    """The prompt file rl_select@key writes and rl_collect@key reads."""
    return CURRICULUM_DIR / f"iter_{key}.jsonl"


def state_path(key: str) -> Path:
    return CURRICULUM_DIR / f"iter_{key}.state.json"


def metrics_path(key: str) -> Path:
    return paths.RL_METRICS_DIR / f"curriculum_{key}.json"


def selection_entry(iteration: int, adaptive: dict, pool: str, seed: int | None, rollouts: str) -> dict:
    """rl.selections' entry for a new iteration (`rollouts`: the previous iteration's rollout file)."""
    key, prev = f"{iteration:03d}", f"{iteration - 1:03d}"
    first = key == FIRST
    return {
        "prev": prev,
        "pool": pool,
        "measured": (adaptive.get("initial_rollouts") or pool) if first else rollouts,
        "state": pool if first else str(state_path(prev)),
        "size": adaptive["prompts_per_iteration"],
        "band": list(adaptive["band"]),
        "seed": seed,
    }


def _order(seed: int | None, identifier: str) -> bytes:
    return hashlib.blake2b(orjson.dumps([seed, identifier]), digest_size=8).digest()


def pool_ids(pool: str | os.PathLike) -> list[str]:
    """The prompt ids of the pool's rows, in order; ids the collector would refuse (two rows, one id) are an error."""
    ids, seen = [], set()
    for line, row in iter_jsonl(pool):
        identifier = prompt_id(normalize_row(row, f"{pool}:{line}"))
        if identifier in seen:
            raise UserError(f"{pool}:{line}: prompt id {identifier!r} appears twice; a pool needs one row per prompt")
        seen.add(identifier)
        ids.append(identifier)
    if not ids:
        raise UserError(f"{pool}: the curriculum's pool has no prompts")
    return ids


def measured_pass_rates(rollouts: str | os.PathLike, pass_threshold: float) -> dict[str, float]:
    """prompt id -> share of its rollouts with reward >= pass_threshold, streaming over a rollout file."""
    rates = {}
    for identifier, group in iter_groups(rollouts):
        n = passed = 0
        for rollout in group:
            n += 1
            passed += rollout.reward >= pass_threshold
        rates[identifier] = passed / n
    return rates


def read_state(path: str | os.PathLike) -> dict:
    try:
        state = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the previous iteration's rl_select writes it") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("chosen"), list):
        raise UserError(f"{path}: not a curriculum state (expected 'chosen' and 'pass_rates')")
    return state


@dataclass
class Selection:
    """What one rl_select chose, and why."""

    chosen: list[str]
    pass_rates: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)


def select(entry: dict, key: str, pass_threshold: float) -> Selection:
    """Choose iteration `key`'s prompts as its rl.selections entry says (see the module docstring)."""
    low, high = entry["band"]
    ids = pool_ids(entry["pool"])
    order = {identifier: _order(entry["seed"], identifier) for identifier in ids}
    if key == FIRST:
        profiled = entry["measured"] != entry["pool"]  # a profiling run of checkpoint 000
        measured = measured_pass_rates(entry["measured"], pass_threshold) if profiled else {}
        previous, rates = [i for i in ids if i in measured], dict(measured)
    else:
        state = read_state(entry["state"])
        previous, rates = state["chosen"], dict(state["pass_rates"])
        measured = measured_pass_rates(entry["measured"], pass_threshold)
        rates.update(measured)
    in_pool = set(ids)

    def in_band(identifier: str) -> bool:
        return low <= rates[identifier] <= high

    kept = [i for i in previous if i in measured and i in in_pool and in_band(i)]
    kept = sorted(kept, key=order.__getitem__)[: entry["size"]]
    taken = set(kept)
    unprofiled = sorted((i for i in ids if i not in rates), key=order.__getitem__)
    profiled = [i for i in ids if i in rates and i not in taken]

    def distance(identifier: str) -> float:
        rate = rates[identifier]
        return max(low - rate, rate - high, 0.0)

    profiled.sort(key=lambda i: (distance(i), order[i]))
    room = entry["size"] - len(kept)
    fresh = unprofiled[:room]
    again = profiled[: room - len(fresh)]
    chosen_set = taken | set(fresh) | set(again)
    counts = {
        "chosen": len(chosen_set),
        "kept": len(kept),
        "dropped_below_band": sum(1 for i in previous if i in measured and rates[i] < low),
        "dropped_above_band": sum(1 for i in previous if i in measured and rates[i] > high),
        "refilled_unprofiled": len(fresh),
        "refilled_profiled": len(again),
        "profiled_in_pool": sum(1 for i in ids if i in rates),
        "pool": len(ids),
    }
    return Selection([i for i in ids if i in chosen_set], rates, counts)


def run_select(entry: dict, key: str, pass_threshold: float) -> Selection:
    """Choose and write iteration `key`'s prompt file, state and counts (each atomically)."""
    selection = select(entry, key, pass_threshold)
    chosen = set(selection.chosen)
    pool = entry["pool"]

    def rows():
        for line, row in iter_jsonl(pool):
            if prompt_id(normalize_row(row, f"{pool}:{line}")) in chosen:
                yield row

    write_jsonl(prompts_path(key), rows())
    rates = {identifier: round(rate, 6) for identifier, rate in sorted(selection.pass_rates.items())}
    write_json(state_path(key), {"chosen": selection.chosen, "pass_rates": rates})
    write_json(metrics_path(key), {**selection.counts, "band": list(entry["band"])})
    return selection
