"""What the seed syntax may set (a pydantic model, imported only when a command line is validated), and its check."""

from __future__ import annotations

from pydantic import Field

from rollout_pipeline.errors import UserError
from rollout_pipeline.params import FetchSettings, Sampling, parse_section


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


def validate_seed_run(values: dict) -> dict:
    """{"run": the run's settings, "fetch": the fetch keys the command line set}; a mistake is one line naming
    the key the way it is typed (+num_repeats)."""
    try:
        run = parse_section(SeedRun, values, "")
    except UserError as exc:
        raise UserError(f"+{exc}") from None
    fetch = {
        key: value for key, value in run.model_dump(exclude_unset=True).items() if key in FetchSettings.model_fields
    }
    return {"run": run.model_dump(), "fetch": fetch}
