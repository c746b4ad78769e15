"""Run the embedded reference server (OpenAI chat/Responses + NeMo Gym /run, /verify). See --help."""

from rollout_pipeline.errors import run_cli
from rollout_pipeline.reference.server import main

if __name__ == "__main__":
    run_cli(main, "serve")
