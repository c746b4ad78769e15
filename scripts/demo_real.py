#!/usr/bin/env python3
"""Collect a small objective from SmolLM2-135M under llama-cpp-python's server (offline) and show the metrics."""

from rollout_pipeline.cli.demo_real import script_main

if __name__ == "__main__":
    script_main()
