"""Every package module a stage's script imports is a dependency of that stage in dvc.yaml, so editing it
re-runs the stage. (A stage that missed one would keep serving outputs of code that no longer exists.)
Subpackages are named as folders; the core modules one by one."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support import PY, ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGE = "scripts/rollout_pipeline/"
# Imported lazily (inside functions) or in a child process, so an import of the script alone does not show them.
# params (the models) validates params.yaml when its content was not validated before (cli/stage_args.load_params).
LAZY = {"scripts/collect.py": ["rollout_pipeline.verify.verifiers", "rollout_pipeline.reference.server",
                               "rollout_pipeline.params", "rollout_pipeline.rl.loop"],
        **{f"scripts/{stage}.py": ["rollout_pipeline.params"] for stage in ("filter", "pair", "metrics", "report")}}


def _script_and_deps(name: str) -> tuple[str, list[str]]:
    body = STAGES[name].get("do", STAGES[name])
    script = re.search(r"python (scripts/\S+\.py)", body["cmd"]).group(1)
    return script, [d for d in body["deps"] if isinstance(d, str)]


def _imported_modules(script: str) -> set[str]:
    """The package's source files that importing `script` (plus its lazy imports) loads."""
    probe = f"""
import importlib, json, sys
sys.path.insert(0, "scripts")
importlib.import_module({script.removeprefix("scripts/").removesuffix(".py")!r})
for name in {LAZY.get(script, [])!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith("rollout_pipeline"))))
"""
    files = json.loads(subprocess.run([PY, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    return {str(Path(f).relative_to(ROOT)) for f in files}


def _covered(source_file: str, deps: list[str]) -> bool:
    """A file is covered by a dep naming it, or naming a folder it sits in (a subpackage)."""
    return any(source_file == dep or source_file.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_every_package_module_its_script_imports(stage):
    script, deps = _script_and_deps(stage)
    assert script in deps
    missing = sorted(f for f in _imported_modules(script) if not _covered(f, deps))
    assert not missing, f"add to {stage}'s deps in dvc.yaml: {missing}"
