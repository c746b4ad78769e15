"""Stage prompts@<set>: deterministic arithmetic prompt sets (params.yaml's prompts.sets). See --help."""

from rollout_pipeline.cli.prompts import script_main

if __name__ == "__main__":
    script_main()
