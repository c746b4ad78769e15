#!/usr/bin/env python3
"""Default RL trainer for the embedded reference policy (REINFORCE, group baseline). See --help."""

from rollout_pipeline.errors import run_cli
from rollout_pipeline.rl.trainer import main

if __name__ == "__main__":
    run_cli(main, "train.py")
