"""Each stage in dvc.yaml depends on exactly the code it runs: every package module its script imports (and what
it runs beyond that: a child process, a lazy import), and nothing more. A missing dep would keep serving outputs
of code that no longer exists; an extra one makes an edit cost stages it cannot affect (an edit to the report
re-running the collection, say).

A dep names a module file, or a folder whose every module the stage runs. Other files (the shipped checkpoint)
are data, declared by hand. `python tests/test_dvc_deps.py` prints each stage's deps as they should be.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from support import PY, ROOT  # noqa: E402

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGE = "scripts/rollout_pipeline"
# What a stage runs beyond its script's imports: modules it imports lazily, and scripts it runs as child processes.
_INLINE_SCORING = [
    "rollout_pipeline.collect.fingerprint",
    "rollout_pipeline.collect.scoring",
    "rollout_pipeline.collect.verify_pool",
    "rollout_pipeline.verify.verifiers",
]
# The engine (cli/collect imports it once the arguments and params are read), the embedded server (its starter, and
# its front end run as a child process) and the Ray executor (imported when chosen).
_COLLECTING = [
    "rollout_pipeline.collect.collector",
    "rollout_pipeline.reference.embedded",
    "rollout_pipeline.cli.serve",
    "rollout_pipeline.collect.ray_executor",
]
# params.yaml is validated by the models (params) when its content was not validated before (cli/stage_args).
_VALIDATING = ["rollout_pipeline.params"]
# An RL iteration's collection: its plan and its reward line (cli/collect imports them when it runs one).
_RL_COLLECTING = ["rollout_pipeline.rl.plans", "rollout_pipeline.rl.progress"]
RUNS_ALSO = {
    # The pipeline's collect stages only generate (--generate-only): scoring is the score stages'. (An objective with
    # dynamic_sampling scores as it collects: its verifier's fingerprint is data/settings/objectives/<objective>.json,
    # a dep. An agent with protocol: agent scores inside its /run, and its verifier is not a dep: after an edit to
    # verify/, `dvc repro -f collect@<objective>`.)
    "collect": _COLLECTING + _VALIDATING,
    **{stage: _VALIDATING for stage in ("prompts", "filter", "pair", "metrics", "report")},
    "score": ["rollout_pipeline.verify.verifiers"],
    # A dynamic-sampling objective's file holds the built-in verifiers' fingerprint: a hash of verify/'s sources.
    "objective_settings": ["rollout_pipeline.verify.verifiers"],
    # The RL loop scores as it collects: a new verdict changes the next checkpoint, and every later generation.
    "rl_collect": _COLLECTING + _INLINE_SCORING + _VALIDATING + _RL_COLLECTING,
    "rl_eval": _COLLECTING + _INLINE_SCORING,
    # rl.train.cmd's default and the real-model recipe's trainer (params.rl-real.yaml), child processes
    "rl_train": ["scripts/train.py", "rollout_pipeline.rl.lora_trainer"],
}


def _script_and_deps(name: str) -> tuple[str, list[str]]:
    body = STAGES[name].get("do", STAGES[name])
    script = re.search(r"python (scripts/\S+\.py)", body["cmd"]).group(1)
    return script, [d for d in body["deps"] if isinstance(d, str)]


@cache
def stage_code(name: str) -> frozenset[str]:
    """The package's source files (and scripts) that stage `name` runs: its script's imports, and RUNS_ALSO's."""
    script, _ = _script_and_deps(name)
    extra = RUNS_ALSO.get(name, [])
    modules = [m for m in extra if not m.startswith("scripts/")]
    scripts = [script] + [m for m in extra if m.startswith("scripts/")]
    probe = f"""
import importlib, json, sys
sys.path.insert(0, "scripts")
for script in {[s.removeprefix("scripts/").removesuffix(".py") for s in scripts]!r}:
    importlib.import_module(script)
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith("rollout_pipeline"))))
"""
    files = json.loads(subprocess.run([PY, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    return frozenset({str(Path(f).relative_to(ROOT)) for f in files} | set(scripts))


def _modules_under(folder: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py")}


def expected_deps(name: str) -> list[str]:
    """The stage's code as deps: a folder where the stage runs every module in it, else the module files."""
    code = stage_code(name)
    folders = sorted({str(Path(f).parent) for f in code if f.startswith(PACKAGE + "/")}, key=len)
    whole = []
    for folder in folders:
        if folder != PACKAGE and _modules_under(folder) <= code and not any(folder.startswith(w + "/") for w in whole):
            whole.append(folder)
    files = [f for f in code if not any(f.startswith(w + "/") for w in whole)]
    return sorted(files + whole)


def _code_deps(deps: list[str]) -> list[str]:
    """The deps that are code: module files, and folders holding modules (a folder of data is data)."""
    return [d for d in deps if d.endswith(".py") or ((ROOT / d).is_dir() and _modules_under(d))]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_exactly_the_code_it_runs(stage):
    _, deps = _script_and_deps(stage)
    code, declared = stage_code(stage), _code_deps(deps)
    covered = {f for d in declared for f in ({d} if d.endswith(".py") else _modules_under(d))}
    missing = sorted(code - covered)
    extra = sorted(covered - code)
    assert not missing, f"add to {stage}'s deps in dvc.yaml (it runs them): {missing}"
    assert not extra, (
        f"{stage}'s deps in dvc.yaml name code it never runs (an edit there would re-run it for "
        f"nothing): {extra}; its deps should be {expected_deps(stage)}"
    )


if __name__ == "__main__":  # print each stage's code deps, for dvc.yaml
    for stage in sorted(STAGES):
        print(f"{stage}:\n" + "".join(f"  - {dep}\n" for dep in expected_deps(stage)))
