"""Stage filter: rollouts -> SFT records (params.yaml's `filter`). See --help."""

from rollout_pipeline.cli.filter import script_main

if __name__ == "__main__":
    script_main()
