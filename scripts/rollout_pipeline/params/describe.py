"""pydantic's first error, said the way the rest of the project says things: `<where>: <dotted key>: <problem>`."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel

from rollout_pipeline.errors import did_you_mean

TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true/false",
    "list": "a list",
    "dict": "a mapping",
}
ERROR_TYPES = {
    "int_type": "int",
    "int_from_float": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "list",
    "dict_type": "dict",
    "model_type": "dict",
    "model_attributes_type": "dict",
}
BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def describe(model: type[BaseModel], error: dict, where: str) -> str:
    """One line for one pydantic error: `<where>.<dotted key>: <what is wrong>`."""
    loc = [part for part in error["loc"] if part != "[key]"]
    dotted = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    path = f"{where}: {dotted}" if where and dotted else (where or dotted)
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        known = list(fields_by_key(parent)) if parent else []
        hint = getattr(parent, "moved_keys", {}).get(loc[-1]) if parent else None
        if hint:
            return f"{path}: {hint.format(name=loc[-2] if len(loc) > 1 else '<name>')}"
        return f"{path}: unknown key{did_you_mean(loc[-1], known)}; known keys: {', '.join(known)}"
    if kind in ERROR_TYPES:
        return f"{path}: expected {TYPE_NAMES[ERROR_TYPES[kind]]}, got {value!r}"
    if kind == "literal_error":
        choices = _literal_choices(model, loc)
        return f"{path}: {value!r} is not one of {', '.join(map(str, choices))}{did_you_mean(value, choices)}"
    if kind in BOUNDS:
        op, key = BOUNDS[kind]
        bound = ctx[key]
        shown = float(value) if isinstance(bound, float) and isinstance(value, int) else value
        return f"{path}: {shown!r} is out of range; it must be {op} {bound}"
    if kind == "finite_number":
        return f"{path}: NaN and infinity are not allowed"
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return f"{path}: needs at least {count} item{'s' if count != 1 else ''}"
    message = str(error.get("msg", kind))
    return f"{path}: {message.removeprefix('Value error, ')}"


def fields_by_key(model: type[BaseModel]) -> dict:
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation) or annotation is Any


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _annotation_at(model: type[BaseModel], loc: list) -> Any:
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = fields_by_key(current).get(part)
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _model_at(model: type[BaseModel], loc: list) -> type[BaseModel] | None:
    found = _annotation_at(model, loc)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _literal_choices(model: type[BaseModel], loc: list) -> tuple:
    found = _annotation_at(model, loc)
    return typing.get_args(found) if typing.get_origin(found) is Literal else ()
