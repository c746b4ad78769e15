"""A small declarative validator for params.yaml: names the key, says what is wrong, suggests the closest key."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from rollout_pipeline.errors import UserError, did_you_mean


@dataclass(frozen=True)
class Field:
    """One leaf value: its accepted types, an optional range/choice check and a default."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    nullable: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    check: Callable[[Any], str | None] | None = None
    help: str = ""


@dataclass(frozen=True)
class Section:
    """A mapping with known keys (each a Field, Section or MapOf)."""

    fields: dict[str, Any]
    required: bool = False
    open: bool = False  # open sections pass unknown keys through (e.g. responses_create_params)


@dataclass(frozen=True)
class MapOf:
    """A mapping from user-chosen names to values of one schema (e.g. agents: {name: agent})."""

    value: Any
    required: bool = False
    key_pattern: Callable[[str], str | None] | None = None
    default: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ListOf:
    """A list whose items all follow one schema (e.g. curriculum phases); errors name the item as key[i]."""

    value: Any
    required: bool = False
    min_items: int = 0
    default: list = field(default_factory=list)


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list", dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_leaf(spec: Field, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable or not spec.required:
            return spec.default if not spec.nullable else None
        raise UserError(f"{where}: a value is required")
    ok_types = spec.types
    if isinstance(value, bool) and bool not in ok_types:
        raise UserError(f"{where}: expected {_type_name(ok_types)}, got {value!r}")
    if float in ok_types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, ok_types):
        raise UserError(f"{where}: expected {_type_name(ok_types)}, got {value!r}")
    if isinstance(value, float) and math.isnan(value):
        raise UserError(f"{where}: NaN is not allowed")
    if spec.choices is not None and value not in spec.choices:
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, spec.choices))}{did_you_mean(value, spec.choices)}")
    if spec.minimum is not None and (value < spec.minimum or (spec.exclusive_minimum and value == spec.minimum)):
        op = ">" if spec.exclusive_minimum else ">="
        raise UserError(f"{where}: {value!r} is out of range; it must be {op} {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise UserError(f"{where}: {value!r} is out of range; it must be <= {spec.maximum}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise UserError(f"{where}: {problem}")
    return value


def validate(spec: Any, value: Any, where: str) -> Any:
    """Validate `value` against `spec`; returns it with defaults filled in. `where` is the dotted key path."""
    if isinstance(spec, Field):
        return _check_leaf(spec, value, where)
    if isinstance(spec, ListOf):
        return _validate_list(spec, value, where)
    if value is None:
        value = {} if not getattr(spec, "required", False) else None
        if value is None:
            raise UserError(f"{where}: this section is required")
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping, got {value!r}")
    if isinstance(spec, MapOf):
        out = {}
        for key, item in value.items():
            if spec.key_pattern is not None:
                problem = spec.key_pattern(str(key))
                if problem:
                    raise UserError(f"{where}.{key}: {problem}")
            out[str(key)] = validate(spec.value, item, f"{where}.{key}")
        return out
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in spec.fields:
            if spec.open:
                out[key] = item
                continue
            raise UserError(f"{where}.{key}: unknown key{did_you_mean(key, spec.fields)}; known keys: {', '.join(spec.fields)}")
        out[key] = validate(spec.fields[key], item, f"{where}.{key}")
    for key, sub in spec.fields.items():
        if key in out:
            continue
        if getattr(sub, "required", False):
            raise UserError(f"{where}.{key}: required key is missing")
        out[key] = validate(sub, None, f"{where}.{key}") if not isinstance(sub, Field) else sub.default
    return out


def _validate_list(spec: ListOf, value: Any, where: str) -> list:
    if value is None:
        if spec.required:
            raise UserError(f"{where}: a list is required")
        value = list(spec.default)
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {value!r}")
    if len(value) < spec.min_items:
        raise UserError(f"{where}: needs at least {spec.min_items} item{'s' if spec.min_items != 1 else ''}")
    return [validate(spec.value, item, f"{where}[{index}]") for index, item in enumerate(value)]
