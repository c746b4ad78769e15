"""An agent's settings, typed: params.yaml's validated `agents.<name>` section as the engine reads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rollout_pipeline.settings import PARAMS_FILE, agent_settings

if TYPE_CHECKING:
    from rollout_pipeline.params.collection import Agent

# The agent's settings that decide a verdict and not a generation: the score stages track these, the collect stages
# the rest (scripts/agent_settings.py writes each part to its file), so a verifier change re-scores and never asks
# the model again.
SCORING_KEYS = ("verifier",)


# Not the pydantic model itself: a run whose params.yaml was validated before imports no pydantic
# (settings.validated_once; tests/test_start_up.py), and the model would add it back to every start-up: measured,
# the imports of a warm 1-row collection grow from 0.25 s to 0.39 s (median of 15 runs), on a run whose whole wall
# time is 0.34 s against the 0.5 s start-up target. The fields are the model's, in its order, with none of its
# defaults: validated params always carry every field (tests/collect/test_settings.py checks that the two agree).
@dataclass(frozen=True)
class AgentSettings:
    """A model or agent server, as params/collection.py's `Agent` validated it."""

    protocol: str
    url: str | list[str]
    model: str
    api_key_env: str | None
    verifier: str
    repeat_mode: str
    checkpoint_dir: str | None
    embedded_args: list[str]
    token_data: str | None
    logprobs_mode: str | None

    @classmethod
    def named(cls, params: dict, name: str, source: str = PARAMS_FILE) -> AgentSettings:
        """The agent `name` of validated params; an unknown name lists the known ones."""
        return cls(**agent_settings(params, name, source))

    @classmethod
    def from_model(cls, agent: Agent) -> AgentSettings:
        """From the validated model itself (its defaults, say: `Agent()`)."""
        return cls(**{field.name: getattr(agent, field.name) for field in dataclasses.fields(cls)})

    @property
    def urls(self) -> list[str]:
        """The server URLs (one, or the list load-balanced over)."""
        return self.url if isinstance(self.url, list) else [self.url]

    def generation_settings(self) -> dict:
        """What of the agent decides its generations: all but the verifier (an agent's own reward comes with the
        generation, so protocol: agent's verdicts are covered here too)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in SCORING_KEYS}

    def scoring_settings(self) -> dict:
        """What of the agent decides its verdicts: the verifier (none for protocol: agent: the agent's)."""
        if self.protocol == "agent":
            return {"protocol": "agent"}
        return {"protocol": self.protocol, **{key: getattr(self, key) for key in SCORING_KEYS}}
