"""The seed documents' Hydra-style command line (`+key=value`, `++key=value`, nested keys, lists, `+config_paths`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from rollout_pipeline.errors import UserError, did_you_mean
from rollout_pipeline.params import FetchSettings, Sampling, load_yaml
from rollout_pipeline.schema import parse_section

REQUIRED = ("agent_name", "input_jsonl_fpath", "output_jsonl_fpath")
# Keys a NeMo Gym config file holds besides the run's own: server definitions, which params.yaml's agents replace.
GYM_SERVER_SECTIONS = ("responses_api_agents", "responses_api_models", "resources_servers")
_ABSENT = object()


class SeedRun(FetchSettings):
    """What the seed syntax may set: the run's data (what `ng_collect_rollouts` takes), and how it is fetched
    (the keys of params.yaml's `fetch` block, which override the agent's for this run)."""

    agent_name: str
    input_jsonl_fpath: str
    output_jsonl_fpath: str
    num_repeats: int = Field(1, ge=1)
    limit: int | None = Field(None, ge=1)
    seed: int | None = None
    responses_create_params: Sampling = Field(default_factory=Sampling)
    config_paths: list[str] = Field(default_factory=list)


def parse_seed_args(argv: list[str]) -> tuple[dict, dict]:
    """(the run's settings, the fetch keys the command line set). Hydra's own parser reads the overrides;
    `+config_paths=[a.yaml,b.yaml]` files are merged first, in order, and the overrides then apply on top."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    overrides = []
    for text in argv:
        try:
            overrides += parser.parse_overrides([text])
        except OverrideParseException:
            raise UserError(f"argument {text!r} is not a Hydra override; arguments look like +num_repeats=4, "
                            "++limit=10, +responses_create_params.temperature=0.7 or +config_paths=[run.yaml] "
                            "(quote a value with spaces or special characters: +key='...')") from None
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
        if key in REQUIRED and (value is None or str(value).strip() == ""):
            raise UserError(f"+{key}= has no value; give one, e.g. +{key}="
                            + ("math_agent" if key == "agent_name" else "path/to/file.jsonl"))
        OmegaConf.update(config, key, value, merge=True, force_add=True)
        set_by[key] = f"argument {text!r}"
    values = OmegaConf.to_container(config)
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise UserError("missing " + ", ".join(f"+{key}=..." for key in missing))
    try:
        run = parse_section(SeedRun, values, "")
    except UserError as exc:  # name the key the way it is typed: +num_repeats
        raise UserError(f"+{exc}") from None
    fetch = {key: value for key, value in run.model_dump(exclude_unset=True).items() if key in FetchSettings.model_fields}
    return run.model_dump(), fetch


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


def _merge_config_file(config: Any, path: Path, set_by: dict[str, str]) -> None:
    from omegaconf import OmegaConf

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
