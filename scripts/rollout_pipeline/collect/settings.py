"""A collection run's settings, typed: built from validated params.yaml (an agent, an objective, the fetch settings
that apply) by whichever front end starts the run, and handed as they are to every executor (pickled, for the
processes and Ray workers)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rollout_pipeline.collect.agent_settings import AgentSettings
from rollout_pipeline.collect.protocols import PROTOCOLS
from rollout_pipeline.collect.redact import without_credentials

# aiohttp's connection pool size: the cap on concurrent requests when num_samples_in_parallel is null.
POOL_CAP = 1024


@dataclass(frozen=True)
class RequestOptions:
    """How each request of a run is made: params.yaml's `fetch` keys for one agent and objective (timeouts,
    retries, the reply cap, the verifier's time), their defaults the `FetchSettings` model's. They never change what
    a rollout is."""

    timeout_s: float
    connect_timeout_s: float
    max_retries: int
    give_up_after_s: float
    retry_backoff_s: float
    verify_timeout_s: float
    max_reply_bytes: int

    @classmethod
    def from_fetch(cls, fetch: dict) -> RequestOptions:
        """The per-request keys of validated fetch settings (settings.fetch_settings)."""
        return cls(**{option.name: fetch[option.name] for option in dataclasses.fields(cls)})


@dataclass
class CollectSettings:
    """Everything one collection run needs, whichever front end built it."""

    agent_name: str
    agent: AgentSettings
    fetch: RequestOptions
    input_path: Path
    output_path: Path
    num_repeats: int
    num_samples_in_parallel: int | None
    limit: int | None
    seed: int | None
    max_failure_rate: float
    responses_create_params: dict
    show_progress: bool = True
    # What the model name alone does not pin down, e.g. a hash of the checkpoint it serves (the RL loop
    # retrains a checkpoint under the same name): part of the identity when set, so a resume never mixes.
    model_revision: str | None = None
    # Collector processes: None = auto (processes.auto_processes). How rollouts are fetched, not what
    # they are: not part of the identity, so a resume may use another count.
    processes: int | None = None
    # Where the fetching runs: "local" (this host's processes) or "ray" (actors on a Ray cluster, at ray_address,
    # or a local Ray instance when None; `workers` of them, None = one per CPU of the cluster). Not part of the
    # identity either: a run may resume on another executor.
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    # Rows the input scan found (set by the run): rows appended to the file while it runs are not part of it.
    scanned_rows: int | None = None
    # Collect again even when the output already holds this run identity's rollouts (DVC's stages pass it:
    # DVC runs a stage only when something it tracks changed, code included).
    force: bool = False
    # Send again the rollouts NeMo Gym masked (mask_sample) in an earlier run of the same settings, as NeMo Gym's
    # retry_invalid_judge_responses does; without it a resume never asks for them again.
    retry_masked: bool = False
    # Generate only: records without a verdict, for a separate scoring step (the pipeline's score stage), so a
    # verifier change re-scores them without asking the model again. An agent's own reward is kept.
    generate_only: bool = False
    # Keep the progress file after a complete run (a round of dynamic sampling, stages/dynamic_sampling.py): the next
    # round, with a raised limit, takes its rollouts over instead of drawing them again.
    keep_progress: bool = False

    @classmethod
    def from_params(
        cls,
        agent_name: str,
        agent: AgentSettings,
        objective: dict,
        fetch: dict,
        output_path: Path,
        show_progress: bool = True,
        model_revision: str | None = None,
    ) -> CollectSettings:
        """From validated params: an agent, an objective's data keys (prompts, num_repeats, limit, seed,
        responses_create_params) and the fetch settings that apply to them (settings.fetch_settings)."""
        return cls(
            agent_name=agent_name,
            agent=agent,
            fetch=RequestOptions.from_fetch(fetch),
            input_path=Path(objective["prompts"]),
            output_path=output_path,
            num_repeats=objective["num_repeats"],
            num_samples_in_parallel=fetch["num_samples_in_parallel"],
            limit=objective["limit"],
            seed=objective["seed"],
            max_failure_rate=fetch["max_failure_rate"],
            responses_create_params={k: v for k, v in objective["responses_create_params"].items() if v is not None},
            show_progress=show_progress,
            model_revision=model_revision,
        )

    @property
    def parallel(self) -> int:
        return min(self.num_samples_in_parallel or POOL_CAP, POOL_CAP)

    def identity(self, input_sha256: str) -> dict:
        """What decides whether a previous run's progress can be reused. URLs, parallelism, timeouts and
        retries are left out on purpose: they change how rollouts are fetched, not what they are. So is `limit`:
        the input hash covers exactly the rows used, which is what the limit decides."""
        return {
            "input_sha256": input_sha256,
            "agent_name": self.agent_name,
            "protocol": self.agent.protocol,
            "model": self.agent.model,
            # A /verify URL's password is not what the rollouts are: it stays out of the progress and stats files.
            "verifier": (
                without_credentials(self.agent.verifier)
                if not PROTOCOLS[self.agent.protocol].agent_server and not self.generate_only
                else None
            ),
            **({"generate_only": True} if self.generate_only else {}),
            "repeat_mode": self.agent.repeat_mode,
            "num_repeats": self.num_repeats,
            "seed": self.seed,
            "responses_create_params": {k: v for k, v in sorted(self.responses_create_params.items()) if v is not None},
            **({"model_revision": self.model_revision} if self.model_revision else {}),
            **({"token_data": self.agent.token_data} if self.agent.token_data else {}),
            **({"logprobs_mode": self.agent.logprobs_mode} if self.agent.logprobs_mode else {}),
        }
