"""Stage pair: rollouts -> DPO preference pairs (params.yaml's `pair`). See --help."""

from rollout_pipeline.cli.pair import script_main

if __name__ == "__main__":
    script_main()
