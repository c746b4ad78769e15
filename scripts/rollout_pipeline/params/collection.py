"""The models of collection: agents, objectives, sampling, prompt sets, and how rollouts are fetched (`fetch`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from rollout_pipeline.params.base import Checked, NamedMap, Open, Strict
from rollout_pipeline.params.checks import check_env_name, check_url, check_verifier
from rollout_pipeline.settings import RL_EVAL_FETCH, RL_LOOP_FETCH

# ---- fetch: how rollouts are fetched (no stage declares it, so a change here re-runs nothing) -------------


class FetchSettings(Strict):
    """How rollouts are fetched: parallelism, timeouts, retries, limits. They never change what a rollout is."""

    num_samples_in_parallel: int | None = Field(
        None,
        ge=1,
        description=(
            "concurrent requests (null = the connection pool's cap, 1024, which the adaptive limit backs off from)"
        ),
    )
    max_failure_rate: float = Field(
        0.0, ge=0, le=1, description="fraction of rollouts allowed to fail before the run fails"
    )
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to open a connection")
    max_retries: int = Field(
        20,
        ge=0,
        description=("retries per rollout on connection errors, timeouts and 5xx; waiting out a 429 does not count"),
    )
    give_up_after_s: float = Field(
        300.0, gt=0, description="a rollout gives up when no request succeeded for this long"
    )
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff in seconds; doubles per retry, with jitter")
    verify_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "a verifier running longer than this on one rollout is stopped (cause verifier_timeout; not retried)"
        ),
    )
    max_reply_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=24 * 1024 * 1024,
        description=(
            "replies over this are refused as they stream in (not retried); <= 24 MiB so records stay readable"
        ),
    )


FETCH_KEYS = tuple(FetchSettings.model_fields)


class Fetch(FetchSettings):
    """The defaults above, then per-agent and per-objective overrides (an objective's win over its agent's)."""

    agents: NamedMap(FetchSettings) = Field(default_factory=dict, description="per-agent overrides")
    objectives: NamedMap(FetchSettings) = Field(
        default_factory=dict,
        description=(
            f"per-objective overrides; the RL loop's iterations read `{RL_LOOP_FETCH}`, its evaluations `{RL_EVAL_FETCH}`"
        ),
    )


def moved(override: str) -> dict[str, str]:
    """The hint for a fetch key written where it no longer lives; `override` is the fetch section that overrides it
    for this place (`{name}` stands for the agent's or objective's name)."""
    return {
        key: (
            f"moved to fetch.{key} (or {override}.{key}): how rollouts are fetched is not a DVC param, so changing "
            "it re-runs nothing"
        )
        for key in FETCH_KEYS
    }


# ---- agents, sampling, objectives, prompt sets -------------------------------------------------------------


class Agent(Strict):
    """A model or agent server: what `agent_name` (or the seed syntax's +agent_name=) refers to."""

    moved_keys: ClassVar[dict[str, str]] = moved("fetch.agents.{name}")

    protocol: Literal["chat", "responses", "agent"] = Field(
        "chat",
        description=("chat: POST /v1/chat/completions; responses: POST /v1/responses; agent: NeMo Gym POST /run"),
    )
    url: Checked(str | list[str], check_url, before=True) = Field(
        "embedded",
        description=("'embedded' = start the bundled reference server; or a URL; or a list of URLs (load-balanced)"),
    )
    model: str = Field("reference", description="model name sent to the server")
    api_key_env: Checked(str, check_env_name) | None = Field(
        None, description=("NAME of the environment variable holding the API key (never the key itself)")
    )
    verifier: Checked(str, check_verifier) = Field(
        "math",
        description=("math | exact | a resources server's /verify URL | module:function (ignored for protocol: agent)"),
    )
    repeat_mode: Literal["separate", "n"] = Field(
        "separate", description=("separate: one request per repeat; n: chat only, one request with n choices")
    )
    checkpoint_dir: str | None = None
    embedded_args: list[str] = Field(default_factory=list, description="flags for the embedded server")
    # Ask for token data, the way each protocol documents it: logprobs (chat `logprobs`, Responses `include`),
    # or ids too (chat `return_token_ids`: vLLM >= 0.10.2 and SGLang). Kept under NeMo Gym's names.
    token_data: Literal["logprobs", "ids"] | None = Field(
        None,
        description=(
            "ask for token logprobs (and ids); kept as generation_log_probs / generation_token_ids / prompt_token_ids"
        ),
    )
    # What the server's logprobs are, recorded beside them (generation_log_probs_mode): a trainer at temperature != 1
    # needs to know. The server decides (vLLM: --logprobs-mode); this says what it decided.
    logprobs_mode: Literal["raw_logprobs", "processed_logprobs"] | None = Field(
        None,
        description=(
            "what the server's logprobs are: raw_logprobs (before temperature and top_p; vLLM's default) or "
            "processed_logprobs (of the distribution sampled from: vLLM --logprobs-mode processed_logprobs); "
            "null = raw_logprobs, or processed_logprobs for url: embedded"
        ),
    )


class Sampling(Open):
    """responses_create_params: sampling settings; other keys pass through to the server."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_output_tokens: int | None = Field(None, ge=1)


class DynamicSampling(Strict):
    """rl.collect.dynamic_sampling, or an objective's (stages/dynamic_sampling.py)."""

    groups: int = Field(ge=1, description="groups with reward variance the collection keeps")
    max_prompts: int = Field(ge=1, description="the cap: prompts drawn at most to find them")


class Objective(Strict):
    """One objective's data: which prompts, how many rollouts, sampled how. Each key is a DVC param."""

    moved_keys: ClassVar[dict[str, str]] = moved("fetch.objectives.{name}")

    agent_name: str
    prompts: str = Field(description="the prompt JSONL file")
    num_repeats: int = Field(1, ge=1, description="rollouts per prompt")
    limit: int | None = Field(None, ge=1, description="max prompts (null = all)")
    seed: int | None = Field(None, description="per-rollout sampling seeds derive from it (null = fresh draws)")
    responses_create_params: Sampling = Field(default_factory=Sampling)
    dynamic_sampling: DynamicSampling | None = Field(
        None, description="DAPO-style: draw prompts until `groups` groups have reward variance, keep only those"
    )


class PromptSet(Strict):
    """A sample prompt set written by the `prompts` stage to data/prompts/<name>.jsonl."""

    count: int = Field(ge=1)
    difficulty: Literal["tiny", "easy", "hard", "mixed"] = "mixed"
    seed: int = 0


class PromptSets(Strict):
    """The `prompts` section."""

    sets: NamedMap(PromptSet) = Field(default_factory=dict)
