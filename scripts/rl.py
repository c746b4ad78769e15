#!/usr/bin/env python3
"""The RL loop's commands: extend params.yaml, the rl_* stages, the progress table. See --help."""

from rollout_pipeline.cli.rl import script_main

if __name__ == "__main__":
    script_main()
