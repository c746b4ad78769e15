#!/usr/bin/env python3
"""Each agent's generation settings and scoring settings, in separate files (DVC tracks them apart)."""

from rollout_pipeline.cli.agent_settings import script_main

if __name__ == "__main__":
    script_main()
