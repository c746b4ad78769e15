"""Stage score@<objective>: score generated rollouts without the model server, or a file. See --help."""

from rollout_pipeline.cli.score import script_main

if __name__ == "__main__":
    script_main()
