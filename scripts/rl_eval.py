"""Stage rl_eval@NNN: checkpoint NNN at the fixed rl.eval temperature on held-out prompts. See --help."""

from rollout_pipeline.cli.rl_eval import script_main

if __name__ == "__main__":
    script_main()
