"""Each default of a stage's settings lives in the params models alone (params/stages.py, and the prompt sets' model):
the stages' settings objects take every key of their section from validated params, and no setting in stages/ is
given a default of its own, which could drift from the model's."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import typing
from pathlib import Path

from rollout_pipeline.params import Filter, Health, Metrics, Pair, Profile, PromptSet, Report, validate_params
from rollout_pipeline.stages.health import HealthConfig
from rollout_pipeline.stages.prompt_profile import ProfileConfig
from rollout_pipeline.stages.prompt_sets import DIFFICULTIES, write_prompt_set
from rollout_pipeline.stages.report_data import BrowserConfig
from support import PY, SCRIPTS

STAGES_DIR = SCRIPTS / "rollout_pipeline" / "stages"
# The params models whose settings the stages read.
MODELS = (Filter, Pair, Metrics, Health, Profile, Report, PromptSet)
SETTINGS = frozenset(name for model in MODELS for name in model.model_fields)


def restated_defaults(folder: Path, settings: frozenset[str] = SETTINGS) -> list[str]:
    """`file:line name = default` for each class attribute and each function parameter in `folder` that is named
    after a setting of the params models and given a default: a second place for what the model says."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            named: list[tuple[str, ast.expr, int]] = []
            if isinstance(node, ast.ClassDef):
                named += [
                    (statement.target.id, statement.value, statement.lineno)
                    for statement in node.body
                    if isinstance(statement, ast.AnnAssign)
                    and isinstance(statement.target, ast.Name)
                    and statement.value is not None
                ]
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args
                positional = [*arguments.posonlyargs, *arguments.args]
                defaulted = zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults)
                keyword = [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults) if d is not None]
                named += [(argument.arg, default, node.lineno) for argument, default in [*defaulted, *keyword]]
            found += [
                f"{path.name}:{line} {name} = {ast.unparse(value)}" for name, value, line in named if name in settings
            ]
    return found


def test_no_stage_gives_a_setting_of_the_params_models_a_default_of_its_own():
    assert restated_defaults(STAGES_DIR) == []


def test_the_check_catches_a_restated_default_in_a_settings_class_and_in_a_parameter_but_not_a_plain_one(tmp_path):
    (tmp_path / "stage.py").write_text(
        "class Config:\n"
        "    pass_threshold: float = 1.0\n"
        "    health: object\n"
        "def run(path, seed: int = 0, *, band=(0.1, 0.9), chunk: int = 64) -> None: ...\n"
        "def plain(path, seed: int) -> None: ...\n"
    )
    assert restated_defaults(tmp_path) == [
        "stage.py:2 pass_threshold = 1.0",
        "stage.py:4 seed = 0",
        "stage.py:4 band = (0.1, 0.9)",
    ]


def _field_names(config: type) -> set[str]:
    return {field.name for field in dataclasses.fields(config)}


def test_each_stage_settings_object_takes_every_setting_of_its_section_so_a_new_setting_cannot_be_left_out():
    assert _field_names(HealthConfig) == set(Health.model_fields)
    assert _field_names(BrowserConfig) == set(Report.model_fields)
    assert _field_names(ProfileConfig) == {*Profile.model_fields, "pass_threshold", "health"}


def test_a_params_file_that_sets_no_stage_setting_gives_the_stages_the_models_defaults():
    params = validate_params({"agents": {}, "objectives": {}})
    profile = ProfileConfig.from_params(params)
    assert (list(profile.band), profile.group_by) == (Profile().band, Profile().group_by)
    assert profile.pass_threshold == Metrics().pass_threshold
    assert dataclasses.asdict(profile.health) == dataclasses.asdict(HealthConfig.from_params(params["health"]))
    assert dataclasses.asdict(profile.health) == Health().model_dump()
    assert dataclasses.asdict(BrowserConfig(**params["report"])) == Report().model_dump()


def test_an_ad_hoc_prompt_set_takes_its_unset_options_from_the_prompt_set_model(tmp_path):
    out = tmp_path / "adhoc.jsonl"
    result = subprocess.run(
        [PY, str(SCRIPTS / "prompts.py"), "--count", "3", "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    defaults = PromptSet(count=3)
    assert f"wrote 3 {defaults.difficulty} prompts (seed {defaults.seed})" in result.stdout
    assert out.read_bytes() == _prompt_set_bytes(tmp_path / "model.jsonl", defaults)


def _prompt_set_bytes(path: Path, spec: PromptSet) -> bytes:
    write_prompt_set(path, spec.count, spec.difficulty, spec.seed)
    return path.read_bytes()


def test_the_prompt_set_models_difficulties_are_the_ones_the_stage_writes():
    assert typing.get_args(PromptSet.model_fields["difficulty"].annotation) == DIFFICULTIES
