#!/usr/bin/env python3
"""Run the RL loop on SmolLM2-135M under vLLM with runtime LoRA and the LoRA trainer (`make demo-rl-real`)."""

from rollout_pipeline.cli.demo_rl_real import script_main

if __name__ == "__main__":
    script_main()
