"""Stage metrics@<objective>: rollouts -> metrics/<objective>.json and a pass@k curve. See --help."""

from rollout_pipeline.cli.metrics import script_main

if __name__ == "__main__":
    script_main()
