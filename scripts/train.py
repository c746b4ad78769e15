"""The default RL trainer for the embedded reference policy (REINFORCE, group baseline). See --help."""

from rollout_pipeline.cli.train import script_main

if __name__ == "__main__":
    script_main()
