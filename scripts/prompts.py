"""Write deterministic arithmetic prompt sets (params.yaml's prompts.sets, or one ad-hoc set). See --help."""

from rollout_pipeline.errors import run_cli
from rollout_pipeline.stages.prompt_sets import main

if __name__ == "__main__":
    run_cli(main, "prompts")
