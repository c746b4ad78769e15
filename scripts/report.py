#!/usr/bin/env python3
"""Stage report: the run's outputs -> reports/index.html, one page per objective and one for the RL loop. See --help."""

from rollout_pipeline.cli.report import script_main

if __name__ == "__main__":
    script_main()
