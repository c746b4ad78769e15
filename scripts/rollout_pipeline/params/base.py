"""The models' strict base (pydantic): no unknown keys, no coercion, null means the default; one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from rollout_pipeline.errors import UserError
from rollout_pipeline.params.describe import accepts_none, describe, fields_by_key

Model = TypeVar("Model", bound=BaseModel)


class Strict(BaseModel):
    """A params section: no unknown keys, no type coercion ("5" is not a number), and a key set to null takes
    its default unless null is a value it accepts (so `filter:` with nothing under it is the default section)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = fields_by_key(cls)
        return {
            key: value
            for key, value in data.items()
            if not (
                value is None
                and key in fields
                and not fields[key].is_required()
                and not accepts_none(fields[key].annotation)
            )
        }


class Open(Strict):
    """A section that passes unknown keys through to the server (e.g. responses_create_params)."""

    model_config = ConfigDict(extra="allow")


def _string_keys(value: Any) -> Any:
    # YAML reads `4:` as an integer key; names are strings everywhere else, so compare them as strings.
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else value


def NamedMap(value_type: Any) -> Any:
    """A mapping from user-chosen names to one kind of section (agents, objectives, prompt sets)."""
    return Annotated[dict[str, value_type], BeforeValidator(_string_keys)]


def parse_section(model: type[Model], raw: Any, where: str) -> Model:
    """Validate `raw` against `model`, or raise a UserError naming the key (`where: dotted.key: problem`)."""
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise UserError(describe(model, exc.errors()[0], where)) from None


def Checked(value_type: Any, check: Callable[[Any], str | None], before: bool = False) -> Any:
    """`value_type`, with a check that returns a problem (a message) or None."""

    def run(value: Any) -> Any:
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return Annotated[value_type, BeforeValidator(run) if before else AfterValidator(run)]
