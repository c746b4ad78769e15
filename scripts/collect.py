"""Collect rollouts: `--objective NAME`, `--rl-iteration NNN`, or the seed syntax (+agent_name=...). See --help."""

from rollout_pipeline.cli.collect import script_main

if __name__ == "__main__":
    script_main()
