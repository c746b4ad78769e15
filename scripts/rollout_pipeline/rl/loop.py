"""The RL loop as DVC stages: its per-iteration entries of params.yaml, added from the schedule, and its targets.

The seed's loop -- collect with the current policy, average the reward, train, point the agent at
the new checkpoint, repeat -- becomes one set of stages per iteration NNN (dvc.yaml, `foreach:
${rl.iterations}`):

    rl_init                 rl.init -> data/rl/checkpoints/iter_000 (the shipped reference checkpoint by default)
    rl_collect@NNN          checkpoint `prev` (as the model `rl.update.model`) -> data/rl/rl_iter_NNN.jsonl
    rl_metrics@NNN          rollouts -> metrics/rl/iter_NNN.json; prints "Iteration NNN: avg_reward=..."
    rl_train@NNN            rl.train.cmd (rollouts, checkpoint `prev`) -> data/rl/checkpoints/iter_NNN,
                            then the update hook (rl.update.cmd / rl.update.url)
    rl_eval@NNN             checkpoint NNN at the fixed rl.eval temperature on the held-out rl.eval prompts ->
                            data/rl/eval/iter_NNN.jsonl and metrics/rl/eval_NNN.json (learning, apart from annealing)
    rl_progress             every iteration's metrics -> metrics/rl_progress.csv (for `dvc plots`)

Each iteration's effective settings are written out in params.yaml, one entry per iteration:

    rl:
      iterations:
        "005": {prev: "004", temperature: 0.633, prompts: data/prompts/mixed.jsonl, seed: 205}

so DVC tracks them one by one: a change to iteration k re-runs k, and the iterations after it only
through their dependency on checkpoint k. `extend_params` adds the missing entries up to N from
`rl.schedule` (temperature annealing, curriculum phases, seeds) and never rewrites existing ones;
editing an entry by hand is how to override one iteration.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import yaml

from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import atomic_writer
from rollout_pipeline.params import load_params, validate_params
from rollout_pipeline.rl.schedule import collect_agent, iteration_entry, scheduled_entry, scheduled_selection


def _round_trip_yaml():
    from ruamel.yaml import YAML

    handler = YAML()
    handler.preserve_quotes = True
    handler.width = 4096  # never re-wrap long lines or comments
    handler.indent(mapping=2, sequence=4, offset=2)
    # ruamel writes None as an empty value; the file says `null`.
    handler.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return handler


def extend_params(path: str | os.PathLike, to: int) -> list[str]:
    """Add the missing iterations 1..`to` to params.yaml from the schedule; returns the keys added.

    Existing entries are never rewritten, comments and formatting are kept (ruamel round trip), the
    file is replaced atomically, and only when something was added (so a no-op leaves it untouched).
    """
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    source = str(path)
    params = load_params(path)  # validates first: a broken file is reported, never rewritten
    existing = params["rl"]["iterations"]
    missing = [k for k in range(1, to + 1) if f"{k:03d}" not in existing]
    if not missing:
        return []
    collect_agent(params, source)  # a loop without an agent cannot run; say so before writing anything
    handler = _round_trip_yaml()
    text = Path(path).read_text(encoding="utf-8")
    document = handler.load(text)
    rl = document.get("rl")
    if rl is None:
        document["rl"] = rl = CommentedMap()
    iterations = rl.get("iterations")
    if iterations is None:
        rl["iterations"] = iterations = CommentedMap()
    iterations.fa.set_block_style()
    adaptive = params["rl"]["schedule"]["curriculum_mode"] == "adaptive"
    if rl.get("selections") is None:  # dvc.yaml's rl_select iterates over it, empty in fixed mode
        rl["selections"] = CommentedMap()
    added = []
    for number in missing:
        key = f"{number:03d}"
        values = scheduled_entry(params["rl"], number, source)
        entry = CommentedMap(
            [
                ("prev", DoubleQuotedScalarString(values["prev"])),
                ("temperature", values["temperature"]),
                ("prompts", values["prompts"]),
                ("seed", values["seed"]),
            ]
        )
        entry.fa.set_flow_style()
        # Keep the keys in order when a gap is filled (existing "001", "005" + new "003").
        position = sum(1 for k in iterations if str(k) < key)
        iterations.insert(position, DoubleQuotedScalarString(key), entry)
        if adaptive and key not in rl["selections"]:
            selection = scheduled_selection(params["rl"], number)
            flow = CommentedMap(
                (name, DoubleQuotedScalarString(value) if name == "prev" else value)
                for name, value in selection.items()
            )
            flow.fa.set_flow_style()
            rl["selections"].fa.set_block_style()
            position = sum(1 for k in rl["selections"] if str(k) < key)
            rl["selections"].insert(position, DoubleQuotedScalarString(key), flow)
        added.append(key)
    out = io.StringIO()
    handler.dump(document, out)
    new_text = out.getvalue()
    _check_only_added(text, new_text, added, source)
    with atomic_writer(path) as handle:
        handle.write(new_text.encode("utf-8"))
    return added


def _check_only_added(old_text: str, new_text: str, added: list[str], source: str) -> None:
    """Belt and braces: the rewritten file must mean exactly the old one plus the new iterations."""
    old, new = yaml.safe_load(old_text), yaml.safe_load(new_text)
    new_iterations = new["rl"]["iterations"]
    new_selections = new["rl"].get("selections") or {}
    for key in added:
        new_iterations.pop(key)
        new_selections.pop(key, None)
    old_rl = old.get("rl") or {}
    if not old_rl.get("iterations"):
        old_rl["iterations"] = {}
    if "selections" in new["rl"] and not old_rl.get("selections"):
        old_rl["selections"] = {}
    old["rl"] = old_rl
    if old != new:
        raise UserError(
            f"{source}: adding iterations would change other keys; params.yaml is left unchanged (please report this)"
        )
    validate_params(yaml.safe_load(new_text), source)


def repro_targets(params: dict, key: str) -> list[str]:
    """The DVC targets that bring the loop up to iteration `key` (DVC adds every earlier stage they need).
    The progress table is included when `key` is the last iteration, so it never pulls in later ones."""
    iteration_entry(params, key)
    targets = [f"rl_metrics@{key}", f"rl_train@{key}", f"rl_eval@{key}"]
    if key == max(params["rl"]["iterations"]):
        targets.append("rl_progress")
    return targets
