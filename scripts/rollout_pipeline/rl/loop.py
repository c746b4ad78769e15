"""The online RL loop as DVC stages: the schedule, the per-iteration entries of params.yaml, paths, settings.

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

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import orjson
import yaml

from rollout_pipeline import paths
from rollout_pipeline.errors import UserError
from rollout_pipeline.jsonl import atomic_writer, read_records
from rollout_pipeline.params import PARAMS_FILE, agent_settings, load_params, validate_params
from rollout_pipeline.rl import curriculum
from rollout_pipeline.rl.dynamic_sampling import sampling_metrics_path

INIT_KEY = "000"
ROLLOUT_DIR = paths.RL_DIR
CHECKPOINT_DIR = paths.CHECKPOINT_DIR
METRICS_DIR = paths.RL_METRICS_DIR
INIT_RECORD = paths.RL_INIT_RECORD
PROGRESS_CSV = paths.RL_PROGRESS_CSV
EVAL_DIR = paths.RL_EVAL_DIR
PROGRESS_COLUMNS = (
    "iteration",
    "reward_mean",
    "pass@1",
    "temperature",
    "prompts",
    "zero_variance_fraction",
    "prompts_drawn",
    "groups_kept",
    "eval_reward_mean",
    "eval_pass@1",
    "token_mult_prob_error",
    "max_abs_logp_error",
)
MAX_ITERATION = 999


# ---- names and paths ---------------------------------------------------------------------------


def iteration_key(value: int | str) -> str:
    """1, "1", "001" -> "001"; UserError for anything that is not an iteration 1..999."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_ITERATION:
        raise UserError(f"iteration must be a number from 1 to {MAX_ITERATION}, got {value!r}")
    return f"{int(text):03d}"


def checkpoint_path(key: str) -> Path:
    """Checkpoint of iteration `key` ("000" = the initial one). A file for the reference policy; a real
    trainer may write a directory there instead."""
    return CHECKPOINT_DIR / f"iter_{key}"


def rollouts_path(key: str) -> Path:
    return ROLLOUT_DIR / f"rl_iter_{key}.jsonl"


def metrics_path(key: str) -> Path:
    return METRICS_DIR / f"iter_{key}.json"


def eval_rollouts_path(key: str) -> Path:
    return EVAL_DIR / f"iter_{key}.jsonl"


def eval_metrics_path(key: str) -> Path:
    return METRICS_DIR / f"eval_{key}.json"


def train_metrics_path(key: str) -> Path:
    """What rl_train@NNN reports: the trainer's own metrics ({metrics}), such as its on-policy check."""
    return METRICS_DIR / f"train_{key}.json"


def model_name(rl: dict, key: str) -> str:
    """The model name under which the server serves checkpoint `key` (rl.update.model; checkpoint 000 may have its own,
    rl.update.init_model: a real server serves the base model under the name it was started with)."""
    if key == INIT_KEY and rl["update"].get("init_model"):
        return rl["update"]["init_model"]
    return rl["update"]["model"].format(iteration=key)


def prompt_set_name(prompts: str) -> str:
    """data/prompts/easy.jsonl -> easy (the "prompt set" column of the progress table)."""
    name = Path(prompts).name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else name


# ---- the schedule ------------------------------------------------------------------------------


def scheduled_temperature(spec: dict, iteration: int) -> float:
    """rl.schedule.temperature at iteration 1, 2, ...: `start` at 1, `end` from iteration `over` on.

    linear: straight line; cosine: half a cosine (slow, fast, slow); exponential: geometric (the same
    ratio per iteration). Rounded to 3 decimals so params.yaml stays readable.
    """
    start, end, over = spec["start"], spec["end"], spec["over"]
    f = 1.0 if over <= 1 else min(max(iteration - 1, 0), over - 1) / (over - 1)
    shape = spec["shape"]
    if shape == "linear":
        value = start + (end - start) * f
    elif shape == "cosine":
        value = end + (start - end) * (1 + math.cos(math.pi * f)) / 2
    elif shape == "exponential":
        value = start * (end / start) ** f
    else:  # the schema allows only the three above
        raise UserError(f"rl.schedule.temperature.shape: unknown shape {shape!r}")
    return round(value, 3)


def scheduled_prompts(curriculum: list[dict], iteration: int, source: str = PARAMS_FILE) -> str:
    """The prompt file of the curriculum phase that iteration `iteration` falls in."""
    if not curriculum:
        raise UserError(
            f"{source}: rl.schedule.curriculum is empty; add a phase such as "
            "{from: 1, prompts: data/prompts/mixed.jsonl}"
        )
    current = curriculum[0]["prompts"]
    for phase in curriculum:
        if phase["from"] <= iteration:
            current = phase["prompts"]
    return current


def scheduled_entry(rl: dict, iteration: int, source: str = PARAMS_FILE) -> dict:
    """The entry `extend_params` writes for a missing iteration: previous checkpoint, temperature, prompts, seed.
    With the adaptive curriculum, the prompts are the file rl_select@NNN writes."""
    schedule = rl["schedule"]
    adaptive = schedule["curriculum_mode"] == "adaptive"
    return {
        "prev": f"{iteration - 1:03d}",
        "temperature": scheduled_temperature(schedule["temperature"], iteration),
        "prompts": (
            str(curriculum.prompts_path(f"{iteration:03d}"))
            if adaptive
            else scheduled_prompts(schedule["curriculum"], iteration, source)
        ),
        "seed": None if schedule["seed"] is None else schedule["seed"] + iteration,
    }


def scheduled_selection(rl: dict, iteration: int) -> dict:
    """The rl.selections entry `extend_params` writes for a new adaptive iteration (rl/curriculum.py)."""
    schedule = rl["schedule"]
    adaptive = schedule["adaptive"]
    seed = None if schedule["seed"] is None else schedule["seed"] + iteration
    previous = str(rollouts_path(f"{iteration - 1:03d}"))
    return curriculum.selection_entry(iteration, adaptive, adaptive["pool"], seed, previous)


def iteration_entry(params: dict, key: str, source: str = PARAMS_FILE) -> dict:
    """The validated entry of iteration `key`; a missing one says how to add it."""
    iterations = params["rl"]["iterations"]
    if key not in iterations:
        keys = sorted(iterations)
        known = ", ".join(keys) if len(keys) <= 6 else f"{len(keys)} from {keys[0]} to {keys[-1]}"
        raise UserError(
            f"{source}: no iteration {key!r} in rl.iterations (iterations: {known or 'none yet'}); "
            f"`make rl-iter N={int(key)}` adds it from rl.schedule"
        )
    return iterations[key]


# ---- params.yaml: adding iterations without touching anything else --------------------------------


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


# ---- what the stages run -------------------------------------------------------------------------


def collect_agent(params: dict, source: str = PARAMS_FILE) -> str:
    """rl.collect.agent_name, which must be set for the loop to run."""
    name = params["rl"]["collect"]["agent_name"]
    if name is None:
        raise UserError(
            f"{source}: rl.collect.agent_name is not set; name the agent (a key of agents:) that serves the policy"
        )
    return name


def collect_plan(params: dict, key: str, source: str = PARAMS_FILE) -> tuple[str, dict, dict, Path]:
    """(agent name, agent settings, objective-shaped settings, output path) for rl_collect@key.

    The agent is rl.collect.agent_name with its model replaced by the previous checkpoint's model
    name; for the embedded server, models are looked up in data/rl/checkpoints.
    """
    rl = params["rl"]
    entry = iteration_entry(params, key, source)
    collect = rl["collect"]
    agent_name = collect_agent(params, source)
    agent = dict(agent_settings(params, agent_name, source))
    agent["model"] = model_name(rl, entry["prev"])
    if agent["url"] == "embedded":
        agent["checkpoint_dir"] = str(CHECKPOINT_DIR.resolve())
        previous = checkpoint_path(entry["prev"])
        if not previous.exists():
            stage = "rl_init" if entry["prev"] == INIT_KEY else f"rl_train@{entry['prev']}"
            raise UserError(
                f"{previous}: checkpoint missing (iteration {key} collects with it); `dvc repro {stage}` writes it"
            )
    objective = {
        "agent_name": agent_name,
        "prompts": entry["prompts"],
        "num_repeats": collect["num_repeats"],
        "limit": collect["limit"],
        "seed": entry["seed"],
        "responses_create_params": {**collect["responses_create_params"], "temperature": entry["temperature"]},
    }
    return agent_name, agent, objective, rollouts_path(key)


def eval_plan(params: dict, key: str, source: str = PARAMS_FILE) -> tuple[str, dict, dict, Path]:
    """(agent name, agent settings, objective-shaped settings, output path) for rl_eval@key: checkpoint `key`
    itself, sampled at rl.eval's fixed temperature and seed on rl.eval's held-out prompts. Nothing of the
    iteration's own schedule (temperature, prompts, seed) enters, so the eval reward of two checkpoints differs
    only by what training changed."""
    iteration_entry(params, key, source)
    evaluation = params["rl"]["eval"]
    agent_name = collect_agent(params, source)
    agent = dict(agent_settings(params, agent_name, source))
    agent["model"] = model_name(params["rl"], key)
    if agent["url"] == "embedded":
        agent["checkpoint_dir"] = str(CHECKPOINT_DIR.resolve())
        if not checkpoint_path(key).exists():
            raise UserError(
                f"{checkpoint_path(key)}: checkpoint missing (rl_eval@{key} evaluates it); "
                f"`dvc repro rl_train@{key}` writes it"
            )
    sampling = {name: evaluation[name] for name in ("temperature", "top_p", "max_output_tokens")}
    objective = {
        "agent_name": agent_name,
        "prompts": evaluation["prompts"],
        "num_repeats": evaluation["num_repeats"],
        "limit": evaluation["limit"],
        "seed": evaluation["seed"],
        "responses_create_params": sampling,
    }
    return agent_name, agent, objective, eval_rollouts_path(key)


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap identity of a checkpoint's content: the bytes of a file, or a directory's listing
    (names, sizes, mtimes). Part of a collect run's identity, so a resume never mixes rollouts of an
    old and a retrained checkpoint."""
    import hashlib

    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            st = item.stat()
            digest.update(f"{item.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        return "missing"
    return digest.hexdigest()[:16]


def reward_line(key: str, reward_mean: float | None) -> str:
    """The seed's per-iteration line: `Iteration 005: avg_reward=0.612`."""
    return f"Iteration {key}: avg_reward={'null' if reward_mean is None else format(reward_mean, '.3f')}"


def average_reward(path: str | os.PathLike) -> float | None:
    """Mean reward of a rollout file, as `jq -s 'map(.reward) | add/length'` computes it (None if empty)."""
    total, count = 0.0, 0
    for record in read_records(path):
        total += float(record["reward"])
        count += 1
    return total / count if count else None


def read_iteration_metrics(key: str, path: Path | None = None, stage: str = "rl_metrics") -> dict:
    """Iteration `key`'s metrics (metrics/rl/iter_NNN.json; `path` and `stage` name another, e.g. its eval)."""
    path = metrics_path(key) if path is None else path
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; run `make rl-iter N={int(key)}` (or dvc repro {stage}@{key})") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object of metrics")
    return doc


def progress_rows(params: dict, upto: str | None = None, missing_ok: bool = False) -> list[dict[str, Any]]:
    """One row per iteration of params.yaml (up to `upto`): the collection's reward_mean, pass@1, temperature, prompt
    set, zero_variance_fraction, prompts drawn and groups kept (rl/dynamic_sampling.py), and the fixed-temperature evaluation's eval_reward_mean and eval_pass@1 (empty
    when `missing_ok` and the evaluation has not run)."""
    rows = []
    for key, entry in sorted(params["rl"]["iterations"].items()):
        if upto is not None and key > upto:
            break
        if missing_ok and not metrics_path(key).exists():
            continue
        metrics = read_iteration_metrics(key)
        evaluation = (
            {}
            if missing_ok and not eval_metrics_path(key).exists()
            else read_iteration_metrics(key, eval_metrics_path(key), "rl_eval")
        )
        on_policy = _on_policy(key)
        sampling_file = sampling_metrics_path(key)
        sampling = read_iteration_metrics(key, sampling_file, "rl_collect") if sampling_file.exists() else {}
        rows.append(
            {
                "iteration": int(key),
                "reward_mean": metrics.get("reward_mean"),
                "pass@1": metrics.get("pass@1"),
                "temperature": entry["temperature"],
                "prompts": prompt_set_name(entry["prompts"]),
                "zero_variance_fraction": metrics.get("zero_variance_fraction"),
                "prompts_drawn": sampling.get("prompts_drawn"),
                "groups_kept": sampling.get("groups_kept"),
                "eval_reward_mean": evaluation.get("reward_mean"),
                "eval_pass@1": evaluation.get("pass@1"),
                "token_mult_prob_error": on_policy.get("token_mult_prob_error"),
                "max_abs_logp_error": on_policy.get("max_abs_logp_error"),
            }
        )
    return rows


def _on_policy(key: str) -> dict:
    """Iteration `key`'s on-policy check, as its trainer reported it ({} when the trainer reports none, or has not run)."""
    path = train_metrics_path(key)
    if not path.exists():
        return {}
    check = read_iteration_metrics(key, path, "rl_train").get("on_policy")
    return check if isinstance(check, dict) else {}


def progress_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PROGRESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_table(rows: list[dict[str, Any]]) -> str:
    """The reward progression, as the seed prints it at the end of its loop (one line per iteration)."""
    # The on-policy column appears when a trainer reported its check (the LoRA trainer), so the reference loop's
    # table stays the seed's.
    checked = any(row.get("token_mult_prob_error") is not None for row in rows)
    lines = [
        "Reward progression:",
        f"{'iteration':>9}  {'avg_reward':>10}  {'pass@1':>7}  {'temperature':>11}  {'eval_reward':>11}  "
        + ("on_policy_err  " if checked else "")
        + "prompts",
    ]
    for row in rows:
        reward, pass1, evaluation = (
            _three_places(row.get(name)) for name in ("reward_mean", "pass@1", "eval_reward_mean")
        )
        on_policy = f"{_three_places(row.get('token_mult_prob_error')):>13}  " if checked else ""
        lines.append(
            f"{row['iteration']:09d}"[-3:].rjust(9)
            + f"  {reward:>10}  {pass1:>7}  {row['temperature']:>11}  {evaluation:>11}  {on_policy}{row['prompts']}"
        )
    if not rows:
        lines.append("  (no iterations yet: make rl-iter N=1)")
    else:
        lines.append(
            "(eval_reward: the checkpoint trained in that iteration, at the fixed rl.eval temperature on held-out "
            "prompts: learning without the annealing)"
        )
        if checked:
            lines.append(
                "(on_policy_err: token_mult_prob_error, the mean exp(|logp_train - logp_infer|) over the sampled "
                "tokens, checked by the trainer before it trains; rl.train.max_token_mult_prob_error fails it)"
            )
    return "\n".join(lines)


def _three_places(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def repro_targets(params: dict, key: str) -> list[str]:
    """The DVC targets that bring the loop up to iteration `key` (DVC adds every earlier stage they need).
    The progress table is included when `key` is the last iteration, so it never pulls in later ones."""
    iteration_entry(params, key)
    targets = [f"rl_metrics@{key}", f"rl_train@{key}", f"rl_eval@{key}"]
    if key == max(params["rl"]["iterations"]):
        targets.append("rl_progress")
    return targets
