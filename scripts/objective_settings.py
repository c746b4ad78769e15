#!/usr/bin/env python3
"""What chooses an objective's rollouts beyond its generation settings (its collect stage tracks it)."""

from rollout_pipeline.cli.objective_settings import script_main

if __name__ == "__main__":
    script_main()
