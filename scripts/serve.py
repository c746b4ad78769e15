"""Run the embedded reference server (OpenAI chat/Responses + NeMo Gym /run, /verify). See --help."""

from rollout_pipeline.cli.serve import script_main

if __name__ == "__main__":
    script_main()
