"""The gym tier: our collector against the real NeMo Gym 0.7.0 stack (`ng_run`, its agents, resources and model
servers under Ray), beside Gym's own collector, fully offline.

`make test-gym` installs nemo-gym 0.7.0 into .venv-gym (pinned by requirements-gym.lock) and sets GYM_PYTHON to
that interpreter. The stack starts once per session on loopback ports the config pins (see gym_stack.py) and is
stopped by its process group. Without GYM_PYTHON (a plain `make test`) these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gym_stack import GymStack, gym_stack

from support import mark_folder, tier_interpreter

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    mark_folder(items, HERE, pytest.mark.gym)


@pytest.fixture(scope="session")
def gym_python() -> str:
    return tier_interpreter("GYM_PYTHON", "test-gym")


@pytest.fixture(scope="session")
def stack(gym_python, tmp_path_factory) -> GymStack:
    with gym_stack(gym_python, tmp_path_factory.mktemp("gym-stack")) as running:
        yield running
