"""A fresh clone of the project, for real: `make run` in a copy reproduces every output, a second `dvc repro` does
nothing, and the committed dvc.lock and metrics are what any clone reproduces. (Apart from tests/test_pipeline.py,
whose tests share one reproduced project, so that pytest-xdist runs these two beside them.)"""

from __future__ import annotations

import pytest

from dvc_testkit import OUTPUTS, VENV_BIN, copy_project, sh, stages_run


@pytest.mark.e2e
def test_make_run_in_a_fresh_clone_produces_every_output_and_a_second_repro_does_nothing(tmp_path):
    source = copy_project(tmp_path / "source", prompt_count=40)
    clone = tmp_path / "clone"
    sh(f"git clone -q {source} {clone}", tmp_path)
    # Reuse this test run's virtualenv; -o marks its install stamp as up to date so make does not reinstall.
    venv = VENV_BIN.parent
    result = sh(f"make run VENV={venv} -o {venv}/.installed", clone, timeout=600)
    for output in OUTPUTS:
        assert (clone / output).stat().st_size > 0, output
    assert "Outputs:" in result.stdout and "reward_mean" in result.stdout
    again = sh("dvc repro", clone)
    assert stages_run(again.stdout) == set()
    assert "Data and pipelines are up to date." in again.stdout


@pytest.mark.e2e
def test_a_fresh_clone_reproduces_the_committed_lock_and_metrics_so_git_status_stays_clean(tmp_path):
    """What the committed dvc.lock and metrics say is what any clone reproduces: timing lives only in the
    untracked stats files, so `make run` on a fresh clone changes no tracked file."""
    source = copy_project(tmp_path / "source", prompt_count=40)
    venv = VENV_BIN.parent
    sh(f"make run VENV={venv} -o {venv}/.installed", source, timeout=600)
    sh("git add -A && git -c user.name=t -c user.email=t@t commit -qm 'lock and metrics'", source)
    clone = tmp_path / "clone"
    sh(f"git clone -q {source} {clone}", tmp_path)
    sh(f"make run VENV={venv} -o {venv}/.installed", clone, timeout=600)
    assert sh("git status --porcelain", clone).stdout == ""
    assert (clone / "data/rollouts/rl.stats.json").exists()  # the timing is still there, untracked
