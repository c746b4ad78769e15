"""Which executor a run uses: Ray when asked, several processes when the work is worth a fork, else this process."""

from __future__ import annotations

from rollout_pipeline.collect.executor import Executor
from rollout_pipeline.collect.one_process import OneProcess
from rollout_pipeline.collect.processes import Processes, auto_processes
from rollout_pipeline.collect.settings import CollectSettings


def choose_executor(settings: CollectSettings, parallel: int, pending_requests: int) -> Executor:
    """The executor for `parallel` slots and this many requests (`processes: auto` decides on the work's size)."""
    if settings.executor == "ray":
        from rollout_pipeline.collect.ray_executor import RayExecutor  # Ray is an optional extra

        return RayExecutor(settings.ray_address, settings.workers)
    processes = max(1, min(settings.processes or auto_processes(parallel, pending_requests), parallel))
    return OneProcess() if processes == 1 else Processes(processes)
