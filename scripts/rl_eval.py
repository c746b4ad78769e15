#!/usr/bin/env python3
"""Stage rl_eval@NNN: evaluate checkpoint NNN at the fixed rl.eval temperature on held-out prompts. See --help."""

from rollout_pipeline.cli.launch import interruptible_start

with interruptible_start("rl_eval.py"):
    from rollout_pipeline.cli.rl_eval import script_main

if __name__ == "__main__":
    script_main()
