"""The seed documents' Hydra-style command line (`+key=value`, `++key=value`, nested keys, lists, `+config_paths`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from rollout_pipeline.cli.start_guard import guarded_imports
from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.settings import PARAMS_CODE, validated_once

REQUIRED = ("agent_name", "input_jsonl_fpath", "output_jsonl_fpath")
# Keys a NeMo Gym config file holds besides the run's own: server definitions, which params.yaml's agents replace.
GYM_SERVER_SECTIONS = ("responses_api_agents", "responses_api_models", "resources_servers")
_ABSENT = object()
# The modules whose code decides what a command line validates to (kept results are keyed by them too).
SEED_RUN_CODE = ("cli/seed_run.py", *PARAMS_CODE)

# Plain overrides, `+key=value` with a dotted key and a value of letters, digits and `_ . / -`, are read here
# without Hydra (whose import is 0.15 s of a short run's start-up); everything else goes to Hydra's parser.
# A value is typed as Hydra's lexer types a lone token (hydra/grammar/OverrideLexer.g4, hydra-core 1.3):
_PLAIN_OVERRIDE = re.compile(r"\+{0,2}([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)=([\w./-]+)", re.ASCII)
_INT = re.compile(r"-?(?:0|[1-9](?:_?[0-9])*)")
_DIGITS = r"[0-9](?:_?[0-9])*"
_POINT_FLOAT = rf"(?:(?:0|[1-9](?:_?[0-9])*)\.|(?:0|[1-9](?:_?[0-9])*)?\.{_DIGITS})"
_FLOAT = re.compile(rf"-?(?:{_POINT_FLOAT}|(?:(?:0|[1-9](?:_?[0-9])*)|{_POINT_FLOAT})[eE][+-]?{_DIGITS})")
_INF_OR_NAN = re.compile(r"-?(?:inf|nan)", re.IGNORECASE)  # floats that JSON cannot hold: left to Hydra


def parse_seed_args(argv: list[str]) -> tuple[dict, dict]:
    """(the run's settings, the fetch keys the command line set). Plain overrides are read here (`plain_overrides`);
    any other command line by Hydra's own parser, with `+config_paths=[a.yaml,b.yaml]` files merged first, in order,
    and the overrides applied on top."""
    values = plain_overrides(argv)
    if values is not None:  # validated by the model once per command line, then read back
        for key, value in values.items():
            _check_value(key, value)
        _check_complete(values)
        checked = validated_once("seed-run", orjson.dumps(values), SEED_RUN_CODE, lambda: _validate(values))
    else:
        checked = _validate(_hydra_overrides(argv))
    return checked["run"], checked["fetch"]


def plain_overrides(argv: list[str]) -> dict | None:
    """The settings of a command line of plain overrides (nested by their dotted keys, values typed as Hydra
    types them), or None when any argument needs Hydra's parser: quotes, lists, sweeps, interpolations, a key
    given twice or inside another, +config_paths."""
    values: dict[str, Any] = {}
    keys: list[str] = []
    for text in argv:
        match = _PLAIN_OVERRIDE.fullmatch(text)
        if match is None or match[1] == "config_paths" or _INF_OR_NAN.fullmatch(match[2]):
            return None
        key, value = match[1], _typed(match[2])
        if any(key == other or key.startswith(other + ".") or other.startswith(key + ".") for other in keys):
            return None
        keys.append(key)
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def _typed(text: str) -> Any:
    """A value made of one of Hydra's lone tokens is an int, float, bool or null; any other value is a string."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return None if lowered == "null" else text


def _validate(values: dict) -> dict:
    with guarded_imports():
        from rollout_pipeline.cli.seed_run import validate_seed_run
    return validate_seed_run(values)


def _check_value(key: str, value: Any) -> None:
    if key in REQUIRED and (value is None or str(value).strip() == ""):
        raise UserError(
            f"+{key}= has no value; give one, e.g. +{key}="
            + ("math_agent" if key == "agent_name" else "path/to/file.jsonl")
        )


def _check_complete(values: dict) -> None:
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise UserError("missing " + ", ".join(f"+{key}=..." for key in missing))


def _hydra_overrides(argv: list[str]) -> dict:
    """The settings of any command line Hydra reads: its parser, then OmegaConf's merge of +config_paths files."""
    with guarded_imports():
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import OverrideParseException
        from omegaconf import OmegaConf
    parser = OverridesParser.create()
    overrides = []
    for text in argv:
        try:
            overrides += parser.parse_overrides([text])
        except OverrideParseException:
            raise UserError(
                f"argument {text!r} is not a Hydra override; arguments look like +num_repeats=4, "
                "++limit=10, +responses_create_params.temperature=0.7 or +config_paths=[run.yaml] "
                "(quote a value with spaces or special characters: +key='...')"
            ) from None
    config = OmegaConf.create({})
    set_by: dict[str, str] = {}
    for override in overrides:
        if override.key_or_group == "config_paths":
            paths = override.value()
            for path in paths if isinstance(paths, list) else [paths]:
                _merge_config_file(config, Path(str(path)), set_by)
    for override, text in zip(overrides, argv):
        key = override.key_or_group
        if override.is_sweep_override() or override.is_delete():
            raise UserError(f"argument {text!r}: sweeps and deletions are Hydra multirun features; give one value")
        if override.is_add() and OmegaConf.select(config, key, default=_ABSENT) is not _ABSENT:
            source = next((set_by[prefix] for prefix in _prefixes(key) if prefix in set_by), "a config file")
            raise UserError(f"argument {text!r}: {key} is already set by {source}; use ++{key}=... to override it")
        value = override.value()
        _check_value(key, value)
        OmegaConf.update(config, key, value, merge=True, force_add=True)
        set_by[key] = f"argument {text!r}"
    values = OmegaConf.to_container(config)
    _check_complete(values)
    return values


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _merge_config_file(config: Any, path: Path, set_by: dict[str, str]) -> None:
    from omegaconf import OmegaConf

    from rollout_pipeline.cli.seed_run import SeedRun
    from rollout_pipeline.params import load_yaml

    loaded = load_yaml(path)
    if loaded is None:
        return
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a mapping of run settings (agent_name, input_jsonl_fpath, ...)")
    known = list(SeedRun.model_fields)
    for key, value in loaded.items():
        if isinstance(value, dict) and any(section in value for section in GYM_SERVER_SECTIONS):
            continue  # a NeMo Gym server definition: this project's servers are params.yaml's agents
        if key not in known:
            raise UserError(f"{path}: {key}: unknown key{did_you_mean(key, known)}; known keys: {', '.join(known)}")
        OmegaConf.update(config, str(key), value, merge=True, force_add=True)
        set_by[str(key)] = str(path)
