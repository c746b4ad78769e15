"""Where the pipeline's files live, relative to the project root: each place is named here once (dvc.yaml, which
DVC reads, states the same places for its stages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARAMS_FILE = "params.yaml"

DATA_DIR = Path("data")  # what the stages and the demos write, besides metrics and reports
PROMPTS_DIR = Path("data/prompts")
AGENT_SETTINGS_DIR = Path("data/settings/agents")
OBJECTIVE_SETTINGS_DIR = Path("data/settings/objectives")
GENERATIONS_DIR = Path("data/generations")
ROLLOUTS_DIR = Path("data/rollouts")
SFT_DATA = Path("data/sft/train.jsonl")
DPO_PAIRS = Path("data/dpo/pairs.jsonl")
PROFILE_DIR = Path("data/profile")

METRICS_DIR = Path("metrics")
SFT_FILTER_SUMMARY = METRICS_DIR / "sft_filter.json"
DPO_PAIRS_SUMMARY = METRICS_DIR / "dpo_pairs.json"
PASS_AT_K_DIR = METRICS_DIR / "pass_at_k"
PROFILE_BANDS_DIR = METRICS_DIR / "profile"
SAMPLING_DIR = METRICS_DIR / "sampling"

REPORTS_DIR = Path("reports")

# The RL loop.
RL_DIR = Path("data/rl")
CHECKPOINT_DIR = RL_DIR / "checkpoints"
RL_EVAL_DIR = RL_DIR / "eval"
CURRICULUM_DIR = RL_DIR / "curriculum"
RL_METRICS_DIR = METRICS_DIR / "rl"
RL_INIT_RECORD = RL_METRICS_DIR / "init.json"
RL_PROGRESS_CSV = METRICS_DIR / "rl_progress.csv"

# The real-model demos' folders (make demo-real, make demo-rl-real: tooling/), which no stage reads.
DEMO_DIR = DATA_DIR / "demo"
DEMO_RL_REAL_DIR = DATA_DIR / "demo-rl-real"  # a copy of the project: the paths above are inside it
RL_BASE_EVAL = RL_EVAL_DIR / "base.jsonl"  # in that copy: the base model evaluated as rl_eval evaluates checkpoints


@dataclass(frozen=True)
class PerObjective:
    """A folder with one file per objective, named after it: `rollouts("sft")` is data/rollouts/sft.jsonl."""

    folder: Path
    suffix: str

    def __call__(self, objective: str) -> Path:
        return self.folder / f"{objective}{self.suffix}"


generations = PerObjective(GENERATIONS_DIR, ".jsonl")  # the collect stage's rollouts, not yet scored
sampling_metrics = PerObjective(SAMPLING_DIR, ".json")  # ... and what its dynamic sampling drew and kept
rollouts = PerObjective(ROLLOUTS_DIR, ".jsonl")  # the score stage's
objective_metrics = PerObjective(METRICS_DIR, ".json")  # the metrics stage's figures
pass_at_k_curve = PerObjective(PASS_AT_K_DIR, ".json")  # ... and its pass@k curve
prompt_profile = PerObjective(PROFILE_DIR, ".jsonl")  # the profile stage's per-prompt statistics
profile_bands = PerObjective(PROFILE_BANDS_DIR, ".json")  # ... and its prompts by pass-rate band
