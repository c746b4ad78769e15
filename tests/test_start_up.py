"""A short run starts fast: params.yaml is validated by pydantic once per content and read back after that, a plain
seed command line is read without Hydra (typed exactly as Hydra's parser types it), and the entry points import
neither until they need them."""

from __future__ import annotations

import json
import os
import random
import subprocess

import orjson
import pytest

from rollout_pipeline import settings
from rollout_pipeline.cli.seed_args import parse_seed_args, plain_overrides
from rollout_pipeline.cli.stage_args import load_params
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import load_params as validate_params_file
from support import PY, ROOT, SCRIPTS

PARAMS = ROOT / "params.yaml"
SEED_RUN = [
    "+agent_name=math_agent",
    "+input_jsonl_fpath=data/prompts/math.jsonl",
    "+output_jsonl_fpath=out.jsonl",
    "+num_repeats=4",
    "+num_samples_in_parallel=8",
    "+responses_create_params.temperature=0.7",
    "+seed=1",
]
HEAVY = ("pydantic", "hydra", "omegaconf")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache of validation results for this test (and the processes it starts)."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(settings.CACHE_ENV, str(directory))
    return directory


def _heavy_imports_of(probe: str, cache_dir) -> list[str]:
    """Which of pydantic, Hydra and OmegaConf a fresh interpreter imported while running `probe` (from the repo
    root, with `scripts/` on the path, as the stage scripts run)."""
    code = (
        f"import sys\nsys.path.insert(0, 'scripts')\n{probe}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    run = subprocess.run(
        [PY, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, settings.CACHE_ENV: str(cache_dir)},
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1].replace("'", '"'))


# -- what a start-up imports ---------------------------------------------------------------------------------
def test_a_plain_seed_command_line_imports_pydantic_only_the_first_time_and_hydra_never(cache):
    probe = (
        f"from rollout_pipeline.cli.collect import settings_from_seed_args\n"
        f"settings_from_seed_args({SEED_RUN!r}, {str(PARAMS)!r})"
    )
    assert _heavy_imports_of(probe, cache) == ["pydantic"]  # params.yaml and the command line validated
    assert _heavy_imports_of(probe, cache) == []  # both read back


def test_a_seed_command_line_that_needs_hydra_still_gets_it(cache):
    probe = (
        f"from rollout_pipeline.cli.seed_args import parse_seed_args\n"
        f"parse_seed_args({SEED_RUN[:3] + ['+responses_create_params.stop=[END]']!r})"
    )
    assert _heavy_imports_of(probe, cache) == ["hydra", "omegaconf", "pydantic"]


@pytest.mark.parametrize("script", ["filter", "pair", "metrics", "report", "collect"])
def test_each_stage_script_reads_params_yaml_validated_before_without_importing_pydantic(cache, script):
    probe = f"import {script}\nfrom rollout_pipeline.cli.stage_args import load_params\nload_params('params.yaml')"
    if script == "collect":  # the script guards its imports; its module is the front end's
        probe = probe.replace("import collect", "import rollout_pipeline.cli.collect")
    _heavy_imports_of(probe, cache)
    assert _heavy_imports_of(probe, cache) == []


# -- validation results kept by content -------------------------------------------------------------------
def test_a_result_read_back_is_exactly_what_validation_gave(cache):
    validated = validate_params_file(PARAMS)
    first, again = load_params(PARAMS), load_params(PARAMS)
    (entry,) = cache.glob("*.json")
    assert entry.stat().st_mode & 0o077 == 0  # owner-only: a URL in params.yaml may carry a password
    # Byte-equal as JSON: the same keys in the same order, and 1 stays an int, 1.0 a float, null a None.
    assert orjson.dumps(first) == orjson.dumps(again) == orjson.dumps(validated)


def test_an_edited_params_yaml_is_validated_again_and_a_broken_one_is_reported_every_time(cache, tmp_path):
    path = tmp_path / "params.yaml"
    text = PARAMS.read_text()
    path.write_text(text)
    assert load_params(path)["filter"]["min_reward"] == 0.8
    path.write_text(text.replace("min_reward: 0.8", "min_reward: 0.5"))
    assert load_params(path)["filter"]["min_reward"] == 0.5
    path.write_text(text.replace("min_reward: 0.8", "min_reward: high"))
    for _ in range(2):
        with pytest.raises(UserError) as raised:
            load_params(path)
        assert str(raised.value) == f"{path}: filter.min_reward: expected a number, got 'high'"
    assert len(list(cache.glob("*.json"))) == 2  # the two good versions; an error is never kept


def test_a_mistake_on_a_plain_command_line_is_reported_every_time_and_never_kept(cache):
    for _ in range(2):
        with pytest.raises(UserError, match=r"^\+num_repeats: 0 is out of range; it must be >= 1$"):
            parse_seed_args([*SEED_RUN[:3], "+num_repeats=0"])
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_a_change_to_the_validating_code_validates_again(cache, tmp_path, monkeypatch):
    package = tmp_path / "package"
    package.mkdir()
    (package / "models.py").write_text("LIMIT = 1\n")
    monkeypatch.setattr(settings, "PACKAGE_DIR", package)
    assert settings.validated_once("test", b"same input", ["models.py"], lambda: {"by": "first"}) == {"by": "first"}
    assert settings.validated_once("test", b"same input", ["models.py"], lambda: {"by": "second"}) == {"by": "first"}
    (package / "models.py").write_text("LIMIT = 2\n")
    assert settings.validated_once("test", b"same input", ["models.py"], lambda: {"by": "third"}) == {"by": "third"}


def test_a_cache_that_cannot_be_written_or_read_only_means_validating_again(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(settings.CACHE_ENV, str(blocker / "cache"))
    assert load_params(PARAMS) == validate_params_file(PARAMS)
    monkeypatch.setenv(settings.CACHE_ENV, str(tmp_path / "cache"))
    load_params(PARAMS)
    (entry,) = (tmp_path / "cache").glob("*.json")
    entry.write_bytes(b'{"cut off by a crash')
    assert load_params(PARAMS) == validate_params_file(PARAMS)
    assert orjson.loads(entry.read_bytes()) == validate_params_file(PARAMS)  # and kept again, whole


def test_a_result_json_cannot_give_back_as_it_was_is_not_kept(cache):
    assert settings.validated_once("test", b"input", [], lambda: {"pair": (1, 2)}) == {"pair": (1, 2)}
    assert settings.validated_once("test", b"input", [], lambda: {"pair": [3]}) == {"pair": [3]}


# -- plain command lines without Hydra ------------------------------------------------------------------------
def _hydra_value(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(text).value()


EDGE_VALUES = [
    "4",
    "-4",
    "0",
    "00",
    "007",
    "1_000",
    "1__0",
    "1_",
    "0.7",
    ".5",
    "-.5",
    "1.",
    "1e3",
    "1E3",
    "2e-3",
    "1.5e2",
    "1.e2",
    "1e",
    "e1",
    "true",
    "True",
    "TRUE",
    "false",
    "trueish",
    "null",
    "NULL",
    "nullify",
    "none",
    "Infinity",
    "info",
    "nano",
    "math_agent",
    "data/prompts/math.jsonl",
    "out.jsonl",
    "-",
    ".",
    "/",
    "a-b",
    "-x",
    "x-",
    "1.5.jsonl",
    "v1.2",
    "1/2",
    "..",
    "_",
    "_1",
    "Qwen/Qwen3-8B",
    "0x10",
    "1_0.5",
]


@pytest.mark.parametrize("value", EDGE_VALUES)
def test_a_plain_value_is_typed_as_hydras_parser_types_it(value):
    expected = _hydra_value(f"+key={value}")
    (got,) = plain_overrides([f"+key={value}"]).values()
    assert (type(got), got) == (type(expected), expected)


def test_random_plain_values_are_typed_as_hydras_parser_types_them():
    rng = random.Random(28)
    alphabet = "0123456789_.-/eEaflnrstuNTI"
    parser_values = 0
    for _ in range(1500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        plain = plain_overrides([f"+key={value}"])
        if plain is None:
            continue  # left to Hydra
        parser_values += 1
        expected = _hydra_value(f"+key={value}")
        assert (type(plain["key"]), plain["key"]) == (type(expected), expected), value
    assert parser_values > 1000


def test_plain_dotted_keys_nest_as_hydra_and_omegaconf_nest_them():
    plain = plain_overrides(SEED_RUN + ["++limit=3", "responses_create_params.reasoning.effort=high"])
    assert plain["responses_create_params"] == {"temperature": 0.7, "reasoning": {"effort": "high"}}
    assert parse_seed_args(SEED_RUN + ["++limit=3"]) == parse_seed_args(
        SEED_RUN + ["++limit=3", "+config_paths=[]"]
    )  # the second goes through Hydra: the same settings


@pytest.mark.parametrize(
    "argv",
    [
        ["+stop=[END]"],
        ["+name='two words'"],
        ["+a=1,2"],
        ["~a"],
        ["+a=${b}"],
        ["+a="],
        ["+a=x:y"],
        ["+a=+5"],
        ["+a=inf"],
        ["+a=-NaN"],
        ["+a=1", "++a=2"],
        ["+a.b=1", "+a=2"],
        ["+a=2", "+a.b=1"],
        ["+config_paths=[x.yaml]"],
        ["+grp/opt=1"],
        ["+a=é"],
        ["+dashed-key=1"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_command_line_that_needs_hydras_parser_is_left_to_it(argv):
    assert plain_overrides(argv) is None


def test_the_seed_scripts_lazy_imports_still_cover_a_one_line_error_for_a_missing_params_file(tmp_path):
    run = subprocess.run(
        [PY, str(SCRIPTS / "collect.py"), *SEED_RUN, "--params", str(tmp_path / "none.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr == f"collect.py: error: {tmp_path / 'none.yaml'}: file not found\n"
