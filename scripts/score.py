#!/usr/bin/env python3
"""Score generated rollouts without the model server: `--objective rl|sft|dpo` (the score stage), or a file."""

from rollout_pipeline.cli.launch import interruptible_start

with interruptible_start("score.py"):
    from rollout_pipeline.cli.score import script_main

if __name__ == "__main__":
    script_main()
