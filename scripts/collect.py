#!/usr/bin/env python3
"""Collect scored rollouts: `--objective rl|sft|dpo`, or the seed syntax (+agent_name=... +input_jsonl_fpath=...)."""

from rollout_pipeline.cli.launch import interruptible_start

with interruptible_start("collect.py"):
    from rollout_pipeline.cli.collect import script_main

if __name__ == "__main__":
    script_main()
