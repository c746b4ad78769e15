"""Stage profile@<objective>: per-prompt statistics and prompts by pass-rate band. See --help."""

from rollout_pipeline.cli.profile_prompts import script_main

if __name__ == "__main__":
    script_main()
